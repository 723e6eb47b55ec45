#!/usr/bin/env python3
"""Hand detection time per 640x480 frame: MediaPipe Tasks HandLandmarker in IMAGE and VIDEO mode, 0/1/2 hands.

Frames are composed from the sample photos (hamer_ros.provisioning.sample_data, fetched once from registry packages):
0 hands: the coffee photo resized to 640x480; 1 hand: the bus man's left hand (crop x2, hand ~80 px) pasted on
it; 2 hands: both bus-man hands (crop x1.5, hands ~55-60 px). IMAGE mode runs each frame on its own; VIDEO mode
gets the same content shifted by 2 px per frame with 33 ms stamps, so MediaPipe's tracking is engaged as in a
camera stream. Also timed: creating a detector (includes the model's hash check) and one HandTracker update.

Large motion: the demo's sequence (scripts/demo_sequence.py `make_sequence`: the bus_man_both photo panned and
zoomed over the frame) with a cycle of 10 frames (hands move by up to about their own size per frame: MediaPipe's
video tracking loses them) and of 30 frames (the demo's default), played cyclically. IMAGE, VIDEO as MediaPipe
gives it (redetect_lost_hands=False) and VIDEO with HandDetector's re-detection run side by side, each frame
through all three in turn, so that a busy shared CPU weighs on them alike. Rows: hands found per frame (mean and
minimum; both hands are in every frame), share of frames re-detected, and the times (frames alternate between a
cheap and a dear kind here: see the mean); after the table, the hands found on the first frames.

    python benchmarks/bench_detection.py [--repeats 100] [--warmup 10] [--only large_motion]

Prints one row per case: hands found per frame (mean) and milliseconds per frame (median, mean, 10th-90th
percentile, min). MediaPipe runs on its own XNNPACK threads; the numbers are for whatever share of the CPU the run
gets.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from hamer_ros.provisioning import sample_data  # noqa: E402
from scripts.demo_sequence import make_sequence  # noqa: E402
from hamer_ros.detection import HandDetector, ensure_hand_landmarker_model  # noqa: E402
from hamer_ros.detection.tracking import HandTracker  # noqa: E402

WIDTH, HEIGHT = 640, 480
VIDEO_STEP_PX = 2


def _photo(photo_id: str) -> np.ndarray:
    return cv2.imread(str(sample_data.fetch(photo_id)))


def hand_patches():
    """{number of hands: image patch to paste on the background (None: no hand)}."""
    one = cv2.resize(_photo('bus_man_left'), None, fx=2.0, fy=2.0, interpolation=cv2.INTER_LINEAR)
    two = cv2.resize(_photo('bus_man_both')[60:340, 100:320], None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    return {0: None, 1: one, 2: two}


def compose(background: np.ndarray, patch, shift: int) -> np.ndarray:
    frame = background.copy()
    if patch is not None:
        height, width = patch.shape[:2]
        x, y = 40 + shift, 20 + shift // 4
        frame[y:y + height, x:x + width] = patch
    return frame


def time_calls(call, inputs, warmup: int):
    """Milliseconds of `call(item)` for each item after the first `warmup` ones, and the results' lengths."""
    times, counts = [], []
    for index, item in enumerate(inputs):
        start = time.perf_counter()
        result = call(item)
        elapsed = (time.perf_counter() - start) * 1000.0
        if index >= warmup:
            times.append(elapsed)
            counts.append(len(result))
    return np.array(times), np.array(counts)


def row(name: str, hands: str, times: np.ndarray) -> str:
    p10, p50, p90 = np.percentile(times, [10, 50, 90])
    return (f'| {name:<32} | {hands:>11} | {p50:8.2f} | {times.mean():7.2f} | {p10:7.2f} - {p90:7.2f} | '
            f'{times.min():7.2f} | {len(times):4d} |')


def large_motion(model_path, cycle: int, total: int, warmup: int):
    """Rows for the demo's panned sequence with `cycle` frames per cycle, and the hands found per frame."""
    sequence = make_sequence(_photo('bus_man_both'), cycle, WIDTH, HEIGHT)
    cases = {'IMAGE': dict(running_mode='image'),
             'VIDEO (MediaPipe as is)': dict(running_mode='video', redetect_lost_hands=False),
             'VIDEO + re-detection': dict(running_mode='video')}
    detectors = {name: HandDetector(model_path=model_path, **options) for name, options in cases.items()}
    redetecting = detectors['VIDEO + re-detection']
    times = {name: [] for name in cases}
    counts = {name: [] for name in cases}
    redetected = []     # per frame: did the re-detecting detector run its image-mode landmarker
    try:
        for index in range(total):
            frame = sequence[index % cycle]
            # A different order each frame: none of the three always runs right after another one.
            for name in np.roll(list(cases), index):
                before = redetecting.redetected_frames
                start = time.perf_counter()
                hands = detectors[name].detect(frame, timestamp_ms=index * 33.0)
                elapsed = (time.perf_counter() - start) * 1000.0
                times[name].append(elapsed)
                counts[name].append(len(hands))
                if detectors[name] is redetecting:
                    redetected.append(redetecting.redetected_frames > before)
    finally:
        for detector in detectors.values():
            detector.close()
    rows = []
    redetected = np.array(redetected[warmup:])
    for name in cases:
        found = np.array(counts[name][warmup:])
        timed = np.array(times[name][warmup:])
        share = f', {redetected.mean():.0%} re-detected' if detectors[name] is redetecting else ''
        rows.append(row(f'large motion {cycle}/cycle, {name}', f'{found.mean():.2f} (min {found.min()}){share}',
                        timed))
        if detectors[name] is redetecting:
            rows.append(row('  ...its re-detected frames', '-', timed[redetected]))
            rows.append(row('  ...its other frames', '-', timed[~redetected]))
    return rows, {name: counts[name][:2 * cycle] for name in cases}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=100, help='timed frames per case (default 100)')
    parser.add_argument('--warmup', type=int, default=10, help='untimed frames first (default 10)')
    parser.add_argument('--only', choices=['large_motion'], help='run only these cases')
    args = parser.parse_args()

    model_path = ensure_hand_landmarker_model()
    background = cv2.resize(_photo('negative_coffee'), (WIDTH, HEIGHT))
    patches = hand_patches()
    total = args.warmup + args.repeats
    print(f'# hand detection, {WIDTH}x{HEIGHT} frames; {platform.processor() or platform.machine()}, '
          f'{os.cpu_count()} CPUs; model {model_path}')
    print('| case                             | hands found | median ms | mean ms | p10 - p90 ms      | min ms  |'
          '    n |')
    print('|---|---|---|---|---|---|---|')

    first_frames = {}
    for cycle in (10, 30):
        rows, first_frames[cycle] = large_motion(model_path, cycle, total, args.warmup)
        print('\n'.join(rows))
    if args.only != 'large_motion':
        small_motion_and_setup(model_path, background, patches, total, args.warmup)
    for cycle, found in first_frames.items():
        print(f'\nhands found per frame, large motion {cycle}/cycle (first {len(found["IMAGE"])} frames):')
        for name, counts in found.items():
            print(f'  {name:<24} {" ".join(map(str, counts))}')
    return 0


def small_motion_and_setup(model_path, background, patches, total: int, warmup: int) -> None:
    for hands, patch in patches.items():
        frame = compose(background, patch, 0)
        with HandDetector(model_path=model_path, running_mode='image') as detector:
            times, counts = time_calls(detector.detect, [frame] * total, warmup)
        print(row(f'IMAGE, {hands} hand(s), num_hands=2', f'{counts.mean():.2f}', times))

        frames = [compose(background, patch, VIDEO_STEP_PX * (i % 50)) for i in range(total)]
        # With fewer tracked hands than num_hands, MediaPipe runs the palm detector on every frame to look for
        # the others; num_hands=1 shows what tracking alone costs for one hand.
        for num_hands in (2, 1) if hands == 1 else (2,):
            with HandDetector(model_path=model_path, running_mode='video', num_hands=num_hands) as detector:
                stamps = iter(np.arange(total) * 33.0)
                times, counts = time_calls(lambda f: detector.detect(f, timestamp_ms=next(stamps)), frames,
                                           warmup)
            print(row(f'VIDEO, {hands} hand(s), num_hands={num_hands}',
                      f'{counts.mean():.2f}, {detector.redetected_frames} re-detected', times))

    def create_and_close(_):
        HandDetector(model_path=None).close()
        return ()
    times, _ = time_calls(create_and_close, range(10 + 2), 2)
    print(row('create detector (+hash check)', '-', times))

    with HandDetector(model_path=model_path) as detector:
        two_hands = detector.detect(compose(background, patches[2], 0))
    tracker = HandTracker()
    times, _ = time_calls(lambda i: tracker.update(two_hands, i / 30.0), range(total), warmup)
    print(row('HandTracker.update, 2 hands', '-', times))


if __name__ == '__main__':
    sys.exit(main())
