"""`python -m hamer_ros evaluate --dataset D --root DIR --out OUT`: accuracy on a hand benchmark, through the same
pipeline the node runs (docs/accuracy.md: how to get each dataset, the paper's figures, what we measured).

OUT receives:
  samples/<key>.json   per image: every ground-truth hand with the box used, whether it was found, its errors
                       (mm; F-scores as fractions), the predicted and true joints (m, camera frame), the predicted
                       vertices where the dataset has true ones, the timings
  run.json             how it was run (a --resume with other settings is refused)
  summary.json         mean / median / count of every metric, detection recall, side accuracy, ms per image
Boxes: `gt` gives HaMeR the tight box of the true joints' projections (as the benchmarks' protocols do; in
--landmarks-only mode MediaPipe runs on a region around that box); `detected` runs the hand search on the whole
image and matches its hands to the true ones by box overlap (recall counts the true hands matched).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hamer_ros.cli.infer import add_model_arguments

SAMPLES, RUN_FILE, SUMMARY_FILE = 'samples', 'run.json', 'summary.json'
MATCH_IOU = 0.3            # a detected hand is the true hand whose box it overlaps by at least this much
REGION_SCALE = 2.0         # --landmarks-only --boxes gt: MediaPipe looks at a square this many box sides wide
# Settings that change the numbers: a --resume must use the same ones.
_RUN_KEYS = ('dataset', 'root', 'split', 'boxes', 'mode', 'model', 'allow_reflection')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--dataset', required=True, choices=('freihand', 'ho3d', 'interhand'),
                        help='which benchmark (its published folder layout: docs/accuracy.md)')
    parser.add_argument('--root', type=Path, required=True, help="the dataset's folder")
    parser.add_argument('--split', help='freihand: evaluation (default) or training; ho3d: evaluation (default) '
                        'or train; interhand: test (default), val or train')
    parser.add_argument('--out', type=Path, required=True, help='output folder')
    parser.add_argument('--limit', type=int, help='only the first N images')
    parser.add_argument('--boxes', choices=('gt', 'detected'), default='gt',
                        help='hand boxes from the ground truth (default, the benchmarks\' protocol) or from our '
                        'hand search (adds detection recall)')
    parser.add_argument('--allow-reflection', action='store_true',
                        help="Procrustes alignment may reflect (FreiHAND's evaluation script allows it; the "
                        'default keeps a proper rotation; both agree for hand-shaped predictions)')
    add_model_arguments(parser)
    parser.add_argument('--resume', action='store_true', help='continue an interrupted run in --out')
    parser.add_argument('--overwrite', action='store_true', help='replace the results of an earlier run in --out')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')


def run(args: argparse.Namespace) -> int:
    from hamer_ros.evaluation.datasets import open_dataset

    from hamer_ros.errors import InputError

    if args.resume and args.overwrite:
        raise InputError('--resume and --overwrite exclude each other')
    if args.limit is not None and args.limit < 1:
        raise InputError(f'--limit must be at least 1, got {args.limit}')
    dataset = open_dataset(args.dataset, args.root, args.split)
    return Evaluation(args, dataset).run()


def _iou(a, b) -> float:
    from hamer_ros.detection.regions import box_iou    # OpenCV only when used (the CLI imports it lazily)

    return box_iou(a, b)


def match_hands(true_boxes, found_boxes, min_iou: float = MATCH_IOU):
    """Greedy one-to-one matching by box overlap, best pairs first: {true index: found index}."""
    pairs = sorted(((_iou(t, f), i, j) for i, t in enumerate(true_boxes) for j, f in enumerate(found_boxes)),
                   reverse=True)
    matched, used = {}, set()
    for iou, i, j in pairs:
        if iou >= min_iou and i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    return matched


class Evaluation:
    def __init__(self, args, dataset):
        self.args = args
        self.dataset = dataset

    def _prepare_folder(self, manifest: dict) -> None:
        from hamer_ros.io.offline import prepare_run_folder

        prepare_run_folder(self.args.out, manifest, [SAMPLES, RUN_FILE, SUMMARY_FILE], list(_RUN_KEYS),
                           self.args.resume, self.args.overwrite, what='evaluation')
        (self.args.out / SAMPLES).mkdir(exist_ok=True)

    def _make_detector(self):
        """--boxes detected: the hand search every front end uses; --boxes gt (landmarks-only): MediaPipe's hand
        landmarker on a region around the true box, which holds one or two close-up hands."""
        from hamer_ros.errors import SetupError
        try:
            if self.args.boxes == 'detected':
                from hamer_ros.detection import make_hand_detector
                return make_hand_detector(running_mode='image', num_hands=8)
            from hamer_ros.detection import HandDetector
            return HandDetector(running_mode='image', num_hands=2)
        except ImportError as exc:
            raise SetupError(f'MediaPipe is not installed ({exc}): pip install mediapipe') from exc

    def run(self) -> int:
        import cv2
        from tqdm import tqdm

        from hamer_ros.io.offline import load_model_or_none
        from hamer_ros.pipeline import HandPipeline

        args = self.args
        if args.threads:
            cv2.setNumThreads(args.threads)
        model = load_model_or_none(args)
        self.mode = 'hamer' if model is not None else 'landmarks_only'
        self._prepare_folder({'dataset': args.dataset, 'root': str(args.root.resolve()), 'split': self.dataset.split,
                              'boxes': args.boxes, 'mode': self.mode,
                              'model': model.describe() if model is not None else None,
                              'allow_reflection': bool(args.allow_reflection)})
        print(f'dataset: {args.dataset} ({self.dataset.split}) at {args.root}, {len(self.dataset)} images\n'
              f'model: {model.describe() if model else "none (landmarks-only)"}; boxes: {args.boxes}')
        needs_detector = args.boxes == 'detected' or model is None
        detector = self._make_detector() if needs_detector else None
        self.pipeline = HandPipeline(detector, None, model)
        total = len(self.dataset) if args.limit is None else min(args.limit, len(self.dataset))
        records, interrupted, start = [], False, time.perf_counter()
        try:
            with tqdm(total=total, unit='image', desc='evaluate', disable=args.quiet, dynamic_ncols=True) as bar:
                for index in range(total):
                    records.append(self._sample_record(index))
                    bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if detector is not None:
                detector.close()
        summary = summarise_records(records, time.perf_counter() - start, interrupted)
        (args.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
        print(format_summary(summary))
        return 130 if interrupted else 0

    # ------------------------------------------------------------------------------------------ one image

    def _sample_record(self, index: int) -> dict:
        from hamer_ros.evaluation.datasets import DatasetError

        path = self.args.out / SAMPLES
        try:
            sample = self.dataset.sample(index)
        except (DatasetError, KeyError, ValueError) as exc:
            record = {'key': f'index{index}', 'status': 'failed', 'error': f'annotation: {exc}', 'hands': []}
            _write_json(path / f'index{index}.json', record)
            return record
        target = path / f'{sample.key}.json'
        if self.args.resume and target.exists():
            try:
                record = json.loads(target.read_text())
                if record.get('status') in ('ok', 'failed') and isinstance(record.get('hands'), list):
                    record['resumed'] = True
                    return record
            except (OSError, ValueError):
                pass           # a damaged record: computed again
        record = self._evaluate(sample)
        _write_json(target, record)
        return record

    def _evaluate(self, sample) -> dict:
        import cv2
        import numpy as np

        from hamer_ros.evaluation.metrics import hand_errors
        from hamer_ros.pipeline import hand_keypoints_camera
        from hamer_ros.types import CameraIntrinsics, FrameResult

        record = {'key': sample.key, 'image': str(sample.image_path), 'status': 'ok', 'error': None, 'hands': []}
        image = cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR)
        if image is None:
            record.update(status='failed', error=f'cannot read image {sample.image_path}')
            return record
        K = sample.camera_matrix
        intrinsics = CameraIntrinsics(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
        start = time.perf_counter()
        height, width = image.shape[:2]
        if self.args.boxes == 'detected':
            frame = self.pipeline.process(image, 0, intrinsics)
            found = list(frame.hands)
            matched = match_hands([h.box_xyxy for h in sample.hands], [h.detection.box_xyxy for h in found])
            results = {i: found[j] for i, j in matched.items()}
        else:
            frame = FrameResult(width=width, height=height, intrinsics=intrinsics)
            detections = [self._detection_for(image, truth) for truth in sample.hands]
            given = [d for d in detections if d is not None]
            if given:
                self.pipeline.add_hands(frame, image, given)
            results = {}
            for i, detection in enumerate(detections):
                hand = next((h for h in frame.hands if h.detection is detection), None)
                if hand is not None:
                    results[i] = hand
        record['seconds'] = time.perf_counter() - start
        record['timings_ms'] = {k: 1000.0 * v for k, v in self.pipeline.last_timings.items()}
        record['dropped'] = list(frame.dropped)
        for i, truth in enumerate(sample.hands):
            entry = {'side': truth.side, 'box_true': truth.box_xyxy.tolist(), 'found': i in results,
                     'joints_true': truth.joints.tolist(), 'valid': truth.valid.tolist()}
            hand = results.get(i)
            if hand is not None:
                joints = hand_keypoints_camera(hand)
                vertices = (hand.reconstruction.vertices_camera if hand.reconstruction is not None
                            and truth.vertices is not None else None)
                entry.update(box_used=np.asarray(hand.detection.box_xyxy).tolist(), side_found=hand.detection.side,
                             joints=np.asarray(joints).tolist(),
                             vertices=None if vertices is None else np.asarray(vertices).tolist(),
                             errors=hand_errors(joints, truth.joints, truth.valid, vertices, truth.vertices,
                                                allow_reflection=self.args.allow_reflection))
            record['hands'].append(entry)
        return record

    def _detection_for(self, image, truth):
        """The detection HaMeR (or the landmarks placement) gets for a true hand in --boxes gt mode."""
        from hamer_ros.types import HandDetection

        if self.pipeline.model is not None:
            return HandDetection(box_xyxy=truth.box_xyxy, side=truth.side)
        return landmarks_in_region(self.pipeline.detector, image, truth.box_xyxy, truth.side)


def landmarks_in_region(detector, image, box, side: str):
    """MediaPipe's hand in a square region around `box` (REGION_SCALE box sides wide), mapped back to the image:
    the detection overlapping `box` most (at least MATCH_IOU), with the given side; None when none does."""
    import numpy as np

    height, width = image.shape[:2]
    centre = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
    half = REGION_SCALE * max(box[2] - box[0], box[3] - box[1]) / 2.0
    x0, y0 = (max(0, int(np.floor(c - half))) for c in centre)
    x1, y1 = min(width, int(np.ceil(centre[0] + half))), min(height, int(np.ceil(centre[1] + half)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    offset = np.array([x0, y0], np.float64)
    best, best_iou = None, MATCH_IOU
    for detection in detector.detect(np.ascontiguousarray(image[y0:y1, x0:x1])):
        detection.box_xyxy = detection.box_xyxy + np.tile(offset, 2)
        if detection.landmarks_2d is not None:
            detection.landmarks_2d = np.asarray(detection.landmarks_2d) + offset
        iou = _iou(detection.box_xyxy, box)
        if iou >= best_iou:
            best, best_iou = detection, iou
    if best is not None:
        best.side = side
    return best


def _write_json(path: Path, record: dict) -> None:
    partial = path.with_name(path.name + '.partial')
    partial.write_text(json.dumps(record))
    partial.replace(path)


def summarise_records(records, seconds: float, interrupted: bool = False) -> dict:
    """The summary of per-image records: metrics over found hands, recall, side accuracy, speed."""
    from hamer_ros.evaluation.metrics import summarise

    hands = [hand for record in records for hand in record['hands']]
    found = [hand for hand in hands if hand.get('found')]
    timed = [record['seconds'] for record in records if 'seconds' in record and not record.get('resumed')]
    return {'images': len(records), 'failed_images': sum(record['status'] == 'failed' for record in records),
            'failures': [f'{r["key"]}: {r["error"]}' for r in records if r['status'] == 'failed'],
            'hands': len(hands), 'found': len(found),
            'recall': len(found) / len(hands) if hands else None,
            'side_accuracy': (sum(h['side_found'] == h['side'] for h in found) / len(found)) if found else None,
            'metrics': summarise(h['errors'] for h in found),
            'ms_per_image': 1000.0 * sum(timed) / len(timed) if timed else None,
            'seconds': seconds, 'interrupted': interrupted}


def format_summary(summary: dict) -> str:
    lines = [f'{summary["images"]} images ({summary["failed_images"]} failed), {summary["hands"]} true hands, '
             f'{summary["found"]} found' + (f' (recall {summary["recall"]:.3f})' if summary['recall'] is not None
                                             else '')]
    for name, stats in summary['metrics'].items():
        unit = '' if name.startswith('f@') else ' mm'
        lines.append(f'  {name:10s} mean {stats["mean"]:8.3f}{unit}  median {stats["median"]:8.3f}{unit}  '
                     f'({stats["count"]} hands)')
    if summary['side_accuracy'] is not None:
        lines.append(f'  sides right on {summary["side_accuracy"]:.3f} of found hands')
    if summary['ms_per_image'] is not None:
        lines.append(f'  {summary["ms_per_image"]:.1f} ms per image')
    return '\n'.join(lines)
