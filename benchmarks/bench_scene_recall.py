#!/usr/bin/env python3
"""Hand recall on whole scenes (several people, hands 10-150 px): the dev set in test/data/scenes (README there).

For each photo the hand search (`hamer_ros.detection.HandSearch`, image mode, defaults unless flags say
otherwise) runs once after one warm-up pass; the palm-only Tasks detector (`HandDetector`, the pre-search
default, num_hands 2) runs beside it as the reference. A found box matches an annotated hand when their IoU is at
least 0.2, or the found box's centre lies inside the annotated box grown by 25 % per side, or (hands annotated
from body keypoints, whose boxes are approximate: README) the dataset's own wrist keypoint lies inside the found
box grown by 25 % per side; one match per hand. Printed:

* recall by the annotated hand's size (longer box side): < 30 px, 30-80 px, > 80 px (hands the dataset marks
  occluded count neither way);
* boxes on no annotated hand, as a share of the scored boxes: a box whose centre lies in one of the scene's
  `ignore` boxes (people in the photo whose hands the dataset did not annotate, drawn by hand: README there) is
  not scored; of the wrong ones, those whose centre lies inside an annotated person's box;
* sides right among matched hands >= 30 px;
* milliseconds per frame for each stage (HandSearch.last_timings) and in all, and the model runs per frame
  (a figure the machine's load does not change).

Speed at 640x480 with two people (issue 11 item 3): `--speed` times the full search (image mode: every tile of the
zoomed palm search on every frame) and the video mode (full searches and the tracked frames between them, each
with `palm_tiles_per_frame` pyramid tiles, timed apart) on the crowdpose 640x480 photo with two people
(crowdpose_106848.jpg resized to 640x480), repeated. The tracked frames are also given in model time (each
frame's model runs times each model's median run alone, measured in the same run), which the machine's load
does not move as it moves the wall-clock maxima. `--video` streams each dev-set photo to a video-mode search
(as the node sees a still scene) and prints the recall of the frame after 1, 3 and 10 s.

    python benchmarks/bench_scene_recall.py [--palm-min-hand-size 24] [--person-tiles 1] [--max-people 4] [--no-body]
        [--no-mirror-pass] [--speed] [--video]

Another set of photos in the same format: `--scenes DIR --annotations FILE` (images in DIR, scenes in FILE;
FILE defaults to DIR/scenes.json). benchmarks/data/voc_group_photos.json annotates nine group photos that are not
in the repository (its "about" says where they are); a hand whose side is null counts for recall, not for sides.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from hamer_ros.detection.regions import box_iou as iou  # noqa: E402

SCENES = Path(__file__).resolve().parents[1] / 'test' / 'data' / 'scenes'    # the dev set (--scenes' default)
SIZE_BINS = (('< 30 px', 0, 30), ('30-80 px', 30, 80), ('> 80 px', 80, 1e9))


def cpu_model() -> str:
    from hamer_ros.cpu_info import cpu_description

    return cpu_description()[0]


def matches(found, truth, wrist=None) -> bool:
    if iou(found, truth) >= 0.2:
        return True
    if wrist is not None:
        # the dataset's own wrist keypoint lies on the found hand (its box grown by 25 % per side)
        fw, fh = 0.25 * (found[2] - found[0]), 0.25 * (found[3] - found[1])
        if found[0] - fw <= wrist[0] <= found[2] + fw and found[1] - fh <= wrist[1] <= found[3] + fh:
            return True
    cx, cy = 0.5 * (found[0] + found[2]), 0.5 * (found[1] + found[3])
    gw, gh = 0.25 * (truth[2] - truth[0]), 0.25 * (truth[3] - truth[1])
    return truth[0] - gw <= cx <= truth[2] + gw and truth[1] - gh <= cy <= truth[3] + gh


def score_scene(scene, found):
    """[(size, matched, side_right or None)] per annotated hand, and the counts of boxes on no annotated hand:
    wrong ones, those of them inside an annotated person, and the ignored ones (centre inside one of the scene's
    `ignore` boxes: people whose hands the dataset did not annotate)."""
    hands = scene['hands']
    used = set()
    rows = []
    for hand in sorted(hands, key=lambda h: -(h['box_xyxy'][2] - h['box_xyxy'][0])):
        box = hand['box_xyxy']
        size = max(box[2] - box[0], box[3] - box[1])
        best = None
        for i, det in enumerate(found):
            if i not in used and matches(det.box_xyxy, box, hand.get('wrist_xy')):
                if best is None or iou(det.box_xyxy, box) > iou(found[best].box_xyxy, box):
                    best = i
        if best is not None:
            used.add(best)
        if hand.get('occluded'):
            continue         # labelled occluded by the dataset: neither missed when not found nor wrong when found
        if best is None:
            rows.append((size, False, None))
        else:
            # a hand annotated without a side (null: the photo does not show whose it is) is not scored for sides
            rows.append((size, True, None if hand.get('side') is None else found[best].side == hand['side']))
    unmatched = [i for i in range(len(found)) if i not in used]
    wrong, on_person = 0, 0
    for i in unmatched:
        box = found[i].box_xyxy
        cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
        if any(p[0] <= cx <= p[2] and p[1] <= cy <= p[3] for p in scene.get('ignore', [])):
            continue     # on a person whose hands the dataset did not annotate: neither right nor wrong
        wrong += 1
        if any(p[0] <= cx <= p[2] and p[1] <= cy <= p[3] for p in scene.get('people', [])):
            on_person += 1
    return rows, wrong, on_person, len(unmatched) - wrong


class Tally:
    """`score_scene`'s counts summed over photos, and the boxes found."""

    def __init__(self):
        self.rows, self.boxes, self.wrong, self.wrong_person, self.ignored = [], 0, 0, 0, 0

    def add(self, scene, found):
        """Scores one photo's hands `found`; returns that photo's (rows, wrong boxes)."""
        rows, wrong, wrong_person, ignored = score_scene(scene, found)
        self.rows += rows
        self.boxes += len(found)
        self.wrong += wrong
        self.wrong_person += wrong_person
        self.ignored += ignored
        return rows, wrong

    def report(self, name, times):
        report(name, self.rows, self.boxes, self.wrong, self.wrong_person, self.ignored, times)


def counts(rows):
    """(hands >= 30 px found, their number, hands < 30 px found, their number, sides right, sides scored) of
    `score_scene` rows; sides only among found hands >= 30 px whose annotation has a side."""
    big = [r for r in rows if r[0] >= 30]
    small = [r for r in rows if r[0] < 30]
    sides = [r[2] for r in big if r[1] and r[2] is not None]
    return sum(r[1] for r in big), len(big), sum(r[1] for r in small), len(small), sum(sides), len(sides)


def report(name, rows, boxes, wrong, wrong_person, ignored, times):
    print(f'\n{name}')
    for label, lo, hi in SIZE_BINS:
        sel = [r for r in rows if lo <= r[0] < hi]
        found = sum(r[1] for r in sel)
        share = f'  ({100.0 * found / len(sel):5.1f} %)' if sel else ''
        print(f'  recall {label:9s}: {found:3d} / {len(sel):3d}' + share)
    hits, big, _, _, right, sided = counts(rows)
    print(f'  recall >= 30 px : {hits:3d} / {big:3d}  ({100.0 * hits / max(1, big):5.1f} %)')
    scored = boxes - ignored
    print(f'  boxes           : {boxes}, {ignored} of them on people whose hands are not annotated (not scored); '
          f'on no annotated hand: {wrong} ({100.0 * wrong / max(1, scored):.1f} % of {scored}), of them inside an '
          f'annotated person: {wrong_person} ({100.0 * wrong_person / max(1, scored):.1f} %)')
    print(f'  sides right (matched >= 30 px): {right} / {sided}'
          + (f' ({100.0 * right / sided:.1f} %)' if sided else ''))
    if times:
        keys = sorted({k for t in times for k in t})
        parts = [f'{k} {1000 * statistics.mean(t.get(k, 0.0) for t in times):.1f}' for k in keys]
        print('  ms per frame (mean): ' + ', '.join(parts))


def read_photo(args, scene) -> np.ndarray:
    """A scene's photo from the --scenes folder; a missing or unreadable one stops the run with its path."""
    path = args.scenes / scene['image']
    image = cv2.imread(str(path))
    if image is None:
        raise SystemExit(f'cannot read {path}: --scenes must be the folder of the photos that the annotations name')
    return image


def search_options(args) -> dict:
    return {'min_detection_confidence': args.min_detection_confidence,
            'min_presence_confidence': args.min_presence_confidence, 'lite_screen': args.lite_screen}


def make_search(args, mode):
    from hamer_ros.detection import HandSearch

    return HandSearch(running_mode=mode, num_hands=args.num_hands, body_stage=not args.no_body,
                      palm_stage=not args.no_palm, palm_min_hand_size=args.palm_min_hand_size,
                      palm_tiles_per_frame=args.palm_tiles_per_frame, person_tiles=args.person_tiles,
                      max_people=args.max_people, mirror_pass=not args.no_mirror_pass, **search_options(args))


def run_video_recall(args, scenes):
    """Each photo streamed as a still video (30 Hz) to a video-mode search, as the node sees a scene: recall of
    the hands reported on the frame after 1 s, 3 s and 10 s (the pyramid's tiles run palm_tiles_per_frame a
    frame, in turn)."""
    checkpoints = {30: '1 s', 90: '3 s', 300: '10 s'}
    results = {frames: Tally() for frames in checkpoints}
    per_scene = []
    for scene in scenes:
        image = read_photo(args, scene)
        search = make_search(args, 'video')
        times = []
        for frame in range(1, max(checkpoints) + 1):
            start = time.perf_counter()
            found = search.detect(image, timestamp_ms=33 * frame)
            times.append(time.perf_counter() - start)
            if frame in checkpoints:
                results[frame].add(scene, found)
        per_scene.append((scene['image'], image.shape[1], image.shape[0], 1000 * statistics.median(times),
                          1000 * statistics.mean(times), search.full_searches))
        search.close()
    print(f'\nvideo mode (the node), each photo streamed at 30 Hz for {max(checkpoints)} frames: ms per frame, '
          'median / mean, and full searches')
    for name, width, height, median, mean, full in per_scene:
        print(f'    {name:50s} {width:4d}x{height:<4d} {median:6.1f} / {mean:6.1f} ms  {full:3d} full searches')
    for frames, label in checkpoints.items():
        results[frames].report(f'video mode (the node), each photo streamed at 30 Hz: the hands of the frame after '
                               f'{label}', [])


def run_recall(args, scenes):
    from hamer_ros.detection import HandDetector

    search = make_search(args, 'image')
    images = {s['image']: read_photo(args, s) for s in scenes}
    for scene in scenes:                   # warm-up
        search.detect(images[scene['image']])
    tally, times, per_scene = Tally(), [], []
    for scene in scenes:
        start = time.perf_counter()
        found = search.detect(images[scene['image']])
        total = time.perf_counter() - start
        t = dict(search.last_timings)
        t['total'] = total
        times.append(t)
        r, w = tally.add(scene, found)
        per_scene.append((scene['image'], sum(x[1] for x in r), len(r), len(found), w, 1000 * total,
                          {k: sum(h.stage == k for h in found) for k in ('body', 'palm')}))
    runs = ', '.join(f'{name} {model.runs / (2 * len(scenes)):.1f}' for name, model in sorted(search._models.items()))
    tally.report('HandSearch (image mode) ' + json.dumps({'palm_min_hand_size': args.palm_min_hand_size,
                                                          'person_tiles': args.person_tiles,
                                                          'max_people': args.max_people, **search_options(args),
                                                          'body': not args.no_body, 'palm': not args.no_palm,
                                                          'mirror_pass': not args.no_mirror_pass}),
                 times)
    print(f'  model runs per photo (mean, warm-up pass included): {runs}')
    print('  per photo: found/annotated, boxes, on no hand, ms, by stage')
    for name, hit, n, b, w, ms, stages in per_scene:
        print(f'    {name:50s} {hit:2d}/{n:2d} boxes {b:2d} wrong {w:2d} {ms:6.0f} ms {stages}')

    tally, times = Tally(), []
    with HandDetector(num_hands=2) as palm_only:
        for scene in scenes:
            start = time.perf_counter()
            found = palm_only.detect(images[scene['image']])
            times.append({'total': time.perf_counter() - start})
            tally.add(scene, found)
    tally.report('reference: palm-only Tasks HandDetector, num_hands=2 (the default before the search)', times)


def rescaled(scene, image, scale: float, mirror: bool = False):
    """A photo and its annotations resized by `scale` (INTER_AREA down, bilinear up) and, with `mirror`, flipped
    left to right (each annotated hand's side swapped: a mirror image of a right hand is a left one)."""
    if scale == 1.0 and not mirror:
        return scene, image
    if scale != 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale,
                           interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR)
    width = image.shape[1]
    if mirror:
        image = np.ascontiguousarray(image[:, ::-1])
    scene = json.loads(json.dumps(scene))

    def point(x, y):
        return [width - scale * x if mirror else scale * x, scale * y]

    def box(b):
        (x0, y0), (x1, y1) = point(b[0], b[1]), point(b[2], b[3])
        return [min(x0, x1), y0, max(x0, x1), y1]

    for hand in scene['hands']:
        hand['box_xyxy'] = box(hand['box_xyxy'])
        if hand.get('wrist_xy'):
            hand['wrist_xy'] = point(*hand['wrist_xy'])
        if mirror and hand.get('side') is not None:
            hand['side'] = {'left': 'right', 'right': 'left'}[hand['side']]
    for key in ('ignore', 'people'):
        scene[key] = [box(b) for b in scene.get(key, [])]
    return scene, image


def run_scales(args, scenes):
    """Image mode on the dev set resized by each of `args.scales` (the same scenes seen by cameras of other
    resolutions) and, with `args.mirror`, on each of them flipped left to right too. A setting tuned to the photos
    as they are shows here; hands are binned by their size after the resize."""
    summary = []
    for scale, mirror in [(scale, mirror) for scale in args.scales or [1.0]
                          for mirror in ((False, True) if args.mirror else (False,))]:
        search, tally = make_search(args, 'image'), Tally()
        for scene in scenes:
            scaled, image = rescaled(scene, read_photo(args, scene), scale, mirror)
            tally.add(scaled, search.detect(image))
        search.close()
        name = f'x{scale:g}' + (' mirrored' if mirror else '')
        tally.report(f'HandSearch (image mode), the photos resized {name}', [])
        hit, n, small_hit, small_n, right, sided = counts(tally.rows)
        summary.append((name, hit, n, small_hit, small_n, tally.wrong, tally.boxes - tally.ignored, right, sided))
    print('\nresized photos: scale, recall >= 30 px, recall < 30 px, boxes on no annotated hand, sides right')
    for name, hit, n, small_hit, small_n, wrong, scored, right, sided in summary:
        print(f'  {name:14s} {hit:3d} / {n:3d}   {small_hit:3d} / {small_n:3d}   {wrong:3d} of {scored:3d} '
              f'({100.0 * wrong / max(1, scored):4.1f} %)   {right:3d} / {sided:3d}')
    totals = [sum(row[i] for row in summary) for i in range(1, 9)]
    print(f'  {"all":14s} {totals[0]:3d} / {totals[1]:3d}   {totals[2]:3d} / {totals[3]:3d}   {totals[4]:3d} of '
          f'{totals[5]:3d} ({100.0 * totals[4] / max(1, totals[5]):4.1f} %)   {totals[6]:3d} / {totals[7]:3d}')


def _frame_times(seconds) -> str:
    """'count, median .. ms, 95th percentile .. ms, max .. ms' of a list of frame times, or 'none'."""
    if not seconds:
        return 'none'
    ranked = sorted(seconds)
    return (f'{len(seconds)}, median {1000 * statistics.median(seconds):.1f} ms, '
            f'p95 {1000 * ranked[int(0.95 * (len(ranked) - 1))]:.1f} ms, max {1000 * ranked[-1]:.1f} ms')


def model_alone_ms(search, repeats: int = 30) -> dict:
    """Each of the search's models run alone on a random input of its size: median ms per run."""
    rng = np.random.default_rng(0)
    alone = {}
    for name, model in search._models.items():
        x = rng.random(tuple(model._input['shape']), dtype=np.float32)
        runs = model.runs
        times = []
        for _ in range(repeats + 3):
            start = time.perf_counter()
            model.run(x)
            times.append(time.perf_counter() - start)
        model.runs = runs
        alone[name] = 1000 * statistics.median(times[3:])
    return alone


def run_speed(args):
    image = cv2.resize(cv2.imread(str(SCENES / 'crowdpose_106848.jpg')), (640, 480))
    for mode in ('image', 'video'):
        search = make_search(args, mode)
        alone = model_alone_ms(search)
        samples, stages, counts, full_frames, tracked_frames, tracked_model = [], [], [], [], [], []
        for i in range(args.repeats + 3):
            # video: the photo shifted by 1 px per frame, so that the tracked regions move as in a stream
            frame = np.roll(image, i % 20, axis=1) if mode == 'video' else image
            before = search.full_searches
            runs_before = {name: model.runs for name, model in search._models.items()}
            start = time.perf_counter()
            found = search.detect(frame, timestamp_ms=33 * i)
            elapsed = time.perf_counter() - start
            if i >= 3:
                samples.append(elapsed)
                (full_frames if search.full_searches > before else tracked_frames).append(elapsed)
                if search.full_searches == before:
                    runs = {name: model.runs - runs_before[name] for name, model in search._models.items()}
                    tracked_model.append((sum(alone[name] * n for name, n in runs.items()) / 1000,
                                          {name: n for name, n in runs.items() if n}))
                stages.append(dict(search.last_timings))
                counts.append(len(found))
        keys = sorted({k for t in stages for k in t})
        frames = args.repeats + 3
        runs = ', '.join(f'{name} {model.runs / frames:.1f}' for name, model in sorted(search._models.items()))
        print(f'\n640x480, two people ({mode} mode, {args.repeats} frames): '
              f'median {1000 * statistics.median(samples):.1f} ms, '
              f'mean {1000 * statistics.mean(samples):.1f} ms, hands per frame {statistics.mean(counts):.2f}, '
              f'full searches {search.full_searches}')
        if mode == 'video':
            print(f'  frames with a full search: {_frame_times(full_frames)}; '
                  f'tracked frames only: {_frame_times(tracked_frames)}')
            if tracked_model:
                # the wall-clock maxima follow the machine's load; the model time of a frame does not
                slowest = max(tracked_model, key=lambda t: t[0])
                print('  tracked frames in model time (the frame\'s model runs x each model\'s median run alone: '
                      + ', '.join(f'{name} {ms:.2f}' for name, ms in sorted(alone.items()))
                      + f' ms; crops and merging not included): {_frame_times([t[0] for t in tracked_model])}; '
                      f'the slowest ran {slowest[1]}')
        print('  ms per frame by stage (mean over frames): '
              + ', '.join(f'{k} {1000 * statistics.mean(t.get(k, 0.0) for t in stages):.1f}' for k in keys))
        print(f'  model runs per frame (mean, warm-up frames included): {runs}')


def main() -> int:
    import inspect

    from hamer_ros.detection import HandSearch

    # HandSearch's own defaults, so that the benchmark measures what users get
    default = {name: p.default for name, p in inspect.signature(HandSearch).parameters.items()}
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--palm-min-hand-size', type=float, default=default['palm_min_hand_size'])
    parser.add_argument('--palm-tiles-per-frame', type=int, default=default['palm_tiles_per_frame'],
                        help='video mode (the speed run)')
    parser.add_argument('--person-tiles', type=int, default=default['person_tiles'])
    parser.add_argument('--max-people', type=int, default=default['max_people'])
    parser.add_argument('--num-hands', type=int, default=default['num_hands'])
    parser.add_argument('--min-detection-confidence', type=float, default=default['min_detection_confidence'],
                        help='palm and person detectors')
    parser.add_argument('--min-presence-confidence', type=float, default=default['min_presence_confidence'],
                        help='hand landmark model')
    parser.add_argument('--lite-screen', type=float, default=default['lite_screen'],
                        help='HandSearch lite_screen (0: the full landmark model on every region)')
    parser.add_argument('--no-body', action='store_true')
    parser.add_argument('--no-mirror-pass', action='store_true',
                        help='no mirror-image search (image mode: the second pass; video: every other full search)')
    parser.add_argument('--no-palm', action='store_true')
    parser.add_argument('--speed', action='store_true', help='also time 640x480 two-person frames')
    parser.add_argument('--video', action='store_true',
                        help='also the recall of a video-mode search on each photo streamed for 1, 3 and 10 s')
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--scales', type=lambda text: [float(v) for v in text.split(',')], default=[],
                        help='also image mode on the dev set resized by each of these factors (e.g. 0.5,0.75,1.5,2)')
    parser.add_argument('--mirror', action='store_true',
                        help='also image mode on the dev set flipped left to right (at each of --scales, else x1)')
    parser.add_argument('--scenes', type=Path, default=SCENES,
                        help='folder of the photos (default: the dev set, test/data/scenes)')
    parser.add_argument('--annotations', type=Path, default=None,
                        help='their scenes file (default: scenes.json in --scenes), e.g. '
                             'benchmarks/data/voc_group_photos.json')
    args = parser.parse_args()
    scenes = json.loads((args.annotations or args.scenes / 'scenes.json').read_text())['scenes']
    print(f'CPU: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start')
    visible = sum(not h.get('occluded') for s in scenes for h in s['hands'])
    print(f'{args.annotations or "dev set"}: {len(scenes)} photos, {visible} '
          f'annotated visible hands (+ {sum(bool(h.get("occluded")) for s in scenes for h in s["hands"])} occluded, '
          'ignored)')
    run_recall(args, scenes)
    if args.scales or args.mirror:
        run_scales(args, scenes)
    if args.video:
        run_video_recall(args, scenes)
    if args.speed:
        run_speed(args)
    print(f'\nload average {os.getloadavg()[0]:.2f} at the end')
    return 0


if __name__ == '__main__':
    sys.exit(main())
