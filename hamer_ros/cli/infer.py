"""`python -m hamer_ros infer INPUT --out DIR`: hand meshes for an image, a folder, a video or a rosbag2 bag.

DIR receives, for every input frame (also frames without a hand or that failed, with the reason):
  results/<stem>.json|.npz   the frame's record (hamer_ros.io.offline.frame_to_record: HandMesh fields + status)
  overlays/<stem>.jpg        or overlay.mp4 (`--overlay`), optionally with the side view of the meshes
  meshes/<stem>_hand<i>_<side>.obj   with --save-mesh (camera frame, closed wrist, left hands wound for left)
  hands/                     bag input: an MCAP bag with /hands/mano, /tf, /hands/markers (input stamps)
  run.json, summary.json     how it was run; counts and timings
HaMeR runs on the crops of several frames at once (`--batch-size` crops per forward). Without HaMeR weights it
runs landmarks-only (MediaPipe joints placed in 3D, no mesh) and says how to install them.

Interrupted runs (Ctrl-C, an error, a killed process): every finished frame has its record, the bag and the
video are closed and readable. `--resume` continues: frames with a record are not computed again, their
outputs (bag messages, overlay video) are rebuilt from the records, so the result equals an uninterrupted run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

from hamer_ros.errors import InputError, SetupError

# run.json entries that must be equal for --resume to continue a run: the results depend on each of them.
RESUME_SETTINGS = ('input', 'topic', 'camera_info_topic', 'format', 'mode', 'weights', 'precision', 'intrinsics',
                   'mirrored', 'num_hands', 'boxes', 'sequence', 'fps')

# Names this command writes in DIR (and the only ones --overwrite removes).
RESULTS, OVERLAYS, MESHES, BAG, VIDEO, RUN_FILE, SUMMARY_FILE = (
    'results', 'overlays', 'meshes', 'hands', 'overlay.mp4', 'run.json', 'summary.json')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('input', help='image file, folder of images, video file or stream URL, or a rosbag2 bag '
                        '(bag folder, .mcap or .db3)')
    parser.add_argument('--out', type=Path, required=True, help='output folder')
    parser.add_argument('--topic', help='bag input: the image topic (sensor_msgs/Image or CompressedImage); '
                        'needed when the bag has several')
    parser.add_argument('--camera-info-topic', help='bag input: CameraInfo topic for the intrinsics '
                        '(default: camera_info beside the image topic, when the bag has it)')
    parser.add_argument('--format', choices=('json', 'npz'), default='json', help='per-frame result files')
    parser.add_argument('--overlay', choices=('auto', 'images', 'video', 'none'), default='auto',
                        help='overlays as images or one video (auto: video for video/bag input)')
    parser.add_argument('--side-view', action='store_true', help='draw the meshes turned by 90 degrees '
                        'beside each overlay (as the HaMeR demo)')
    parser.add_argument('--save-mesh', action='store_true', help='write an OBJ per hand')
    parser.add_argument('--no-bag', action='store_true', help='bag input: do not write the output bag')
    parser.add_argument('--batch-size', type=int, default=4,
                        help='hand crops per HaMeR forward, gathered across frames (default 4)')
    parser.add_argument('--boxes', type=Path, help='JSON boxes file instead of MediaPipe (format: '
                        'hamer_ros.detection.boxes; the output of `detect` works)')
    parser.add_argument('--intrinsics', type=float, nargs=4, metavar=('FX', 'FY', 'CX', 'CY'),
                        help="camera intrinsics in pixels (default: the bag's CameraInfo, else HaMeR's camera)")
    parser.add_argument('--sequence', action='store_true', help='folder input: the images are consecutive frames '
                        'of one camera (MediaPipe video mode, track ids)')
    parser.add_argument('--fps', type=float, default=30.0, help='frame rate of a --sequence folder (default 30)')
    from hamer_ros.detection.factory import add_search_arguments
    add_search_arguments(parser)
    parser.add_argument('--mirrored', action='store_true', help='selfie-view input: swap the detected sides back')
    add_image_size_argument(parser)
    add_model_arguments(parser)
    parser.add_argument('--resume', action='store_true', help='continue an interrupted run in --out')
    parser.add_argument('--overwrite', action='store_true', help='replace the results of an earlier run in --out')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')


def add_image_size_argument(parser: argparse.ArgumentParser) -> None:
    """--max-image-pixels (shared with `detect` and `predict`)."""
    parser.add_argument('--max-image-pixels', type=int, metavar='PIXELS',
                        help="larger images are refused, from their header before decoding where the format allows "
                        "(default: the node's max_image_pixels default, 3840x2160)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags `offline.load_model_or_none` reads (shared with `live`)."""
    parser.add_argument('--data-dir', type=Path, help='HaMeR data folder (official _DATA layout; default: '
                        'HAMER_ROS_DATA_DIR or ~/.local/share/hamer_ros/_DATA)')
    parser.add_argument('--checkpoint', type=Path, help='hamer.ckpt, instead of the one in the data folder')
    parser.add_argument('--mano', type=Path, help='MANO_RIGHT.pkl (only when the checkpoint has no MANO)')
    parser.add_argument('--landmarks-only', action='store_true', help='do not load HaMeR: MediaPipe joints only')
    add_device_arguments(parser)
    parser.add_argument('--threads', type=int, help='CPU threads for PyTorch and OpenCV')


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and how HaMeR runs: --device, --precision, --allow-cpu-fallback (shared with `predict` and `live`)."""
    parser.add_argument('--device', default='auto', help='cpu, cuda, cuda:N or auto (default)')
    # The choices are HamerModel's PRECISIONS, written out: add_arguments must not import PyTorch.
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'fp16', 'bf16', 'int8'),
                        help='fp32 (default, matches the official model); fp16: CUDA autocast; bf16: CUDA '
                        'autocast, or on a CPU with AMX or AVX512_BF16 the network weights in bf16 (faster, '
                        'vertices move by about a millimetre; other CPUs: a warning and fp32); int8: CPU only, '
                        'dynamic quantisation (faster, not exact). With CUDA present pass --device cpu for the '
                        'CPU precisions. Speed and error: docs/performance.md')
    parser.add_argument('--allow-cpu-fallback', action=argparse.BooleanOptionalAction, default=True,
                        help='when CUDA runs out of memory even for a single hand (after smaller batches), '
                        'continue on the CPU in fp32 (much slower) instead of failing; on by default')


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise InputError(f'--batch-size must be at least 1, got {args.batch_size}')
    if args.resume and args.overwrite:
        raise InputError('--resume and --overwrite exclude each other')
    from hamer_ros.io.offline import open_source

    if args.max_image_pixels is not None and args.max_image_pixels < 1:
        raise InputError(f'--max-image-pixels must be at least 1, got {args.max_image_pixels}')
    with open_source(args.input, args.topic, args.camera_info_topic, args.sequence, args.fps,
                     args.max_image_pixels) as source:
        return InferRun(args, source).run()


class InferRun:
    """One `infer` run: frames in, detection per frame, HaMeR batched across frames, outputs in order."""

    def __init__(self, args, source):
        self.args = args
        self.source = source

    # ------------------------------------------------------------------------------------------ set-up

    def _prepare_folder(self, manifest: dict) -> None:
        from hamer_ros.io.offline import prepare_run_folder

        # Every setting that changes the results is compared on --resume.
        prepare_run_folder(self.args.out, manifest, [RESULTS, OVERLAYS, MESHES, BAG, VIDEO, RUN_FILE, SUMMARY_FILE],
                           list(RESUME_SETTINGS), self.args.resume, self.args.overwrite)

    def _manifest(self, model) -> dict:
        """run.json: how this run was made (RESUME_SETTINGS are compared by --resume)."""
        import hashlib

        args, source = self.args, self.source
        boxes = None
        if args.boxes is not None:
            boxes = {'path': str(Path(args.boxes).resolve()),
                     'sha256': hashlib.sha256(Path(args.boxes).read_bytes()).hexdigest()}
        return {'input': str(Path(args.input).resolve()) if '://' not in args.input else args.input,
                'topic': getattr(source, 'topic', None),
                'camera_info_topic': getattr(source, 'camera_info_topic', None),
                'format': args.format, 'mode': self.mode,
                'model': model.describe() if model is not None else None,
                'weights': model._description if model is not None else None,
                'precision': args.precision if model is not None else None,
                'intrinsics': list(args.intrinsics) if args.intrinsics else None,
                'mirrored': bool(args.mirrored), 'num_hands': args.num_hands, 'boxes': boxes,
                'sequence': bool(source.is_sequence), 'fps': source.fps,
                'batch_size': args.batch_size}

    def _make_pipeline(self, model):
        from hamer_ros.pipeline import HandPipeline

        detector = tracker = None
        if self.args.boxes is None:
            from hamer_ros.detection.factory import detector_from_args
            try:
                detector = detector_from_args(self.args, 'video' if self.source.is_sequence else 'image',
                                              mirrored=self.args.mirrored)
            except ImportError as exc:
                raise SetupError(f'MediaPipe is not installed ({exc}): pip install mediapipe, or give the hands '
                                 'with --boxes FILE') from exc
        if self.source.is_sequence:
            from hamer_ros.detection.tracking import HandTracker
            tracker = HandTracker()
        return HandPipeline(detector, tracker, model)

    # ------------------------------------------------------------------------------------------ running

    def run(self) -> int:
        import cv2
        from tqdm import tqdm

        from hamer_ros.io.offline import HandsBag, OverlayImages, OverlayVideo, RecordStore, load_model_or_none
        from hamer_ros.pipeline import faces_by_side
        from hamer_ros.types import CameraIntrinsics

        args, source = self.args, self.source
        if args.threads:
            cv2.setNumThreads(args.threads)
        if args.boxes is not None:
            from hamer_ros.detection import load_boxes_file
            self.boxes = load_boxes_file(args.boxes)
        model = load_model_or_none(args)
        self.mode = 'hamer' if model is not None else 'landmarks_only'
        self._prepare_folder(self._manifest(model))
        print(f'input: {source.description}\nmodel: {model.describe() if model else "none (landmarks-only)"}')
        self.pipeline = self._make_pipeline(model)
        self.faces = faces_by_side(model.faces) if model is not None else None
        self.model_faces = model.faces if model is not None else None
        self.intrinsics = CameraIntrinsics(*args.intrinsics) if args.intrinsics else None
        self.store = RecordStore(args.out / RESULTS, args.format)
        overlay = args.overlay if args.overlay != 'auto' else ('video' if source.kind in ('video', 'bag') else 'images')
        self.overlays = (OverlayImages(args.out / OVERLAYS) if overlay == 'images' else
                         OverlayVideo(args.out / VIDEO, source.fps) if overlay == 'video' else None)
        self.bag = HandsBag(args.out / BAG, self.faces) if source.kind == 'bag' and not args.no_bag else None
        self.counts = dict(frames=0, ok=0, no_hands=0, failed=0, resumed=0, hands=0)
        self.frame_seconds = []
        self._pending, self._pending_crops = [], 0
        start = time.perf_counter()
        interrupted = False
        with contextlib.ExitStack() as closing:
            # Closed whatever happens (an error, Ctrl-C), each on its own: the bag and the video stay readable.
            for output in (self.overlays, self.bag):
                if output is not None:
                    closing.callback(output.close)
            if self.pipeline.detector is not None:
                closing.callback(self.pipeline.detector.close)
            progress = closing.enter_context(tqdm(total=source.total, unit='frame', desc='infer',
                                                  disable=args.quiet, dynamic_ncols=True))
            try:
                for item in source:
                    self._take(item)
                    progress.update(1)
                    progress.set_postfix(hands=self.counts['hands'], failed=self.counts['failed'], refresh=False)
                self._flush()
            except KeyboardInterrupt:
                interrupted = True
        self._summarise(time.perf_counter() - start, interrupted)
        return 130 if interrupted else 0

    def _take(self, item) -> None:
        """One input frame: resumed from its record, recorded as failed, or queued for the next batch."""
        self.counts['frames'] += 1
        if self.args.resume and self.store.exists(item.stem):
            record, frame = self._finished(item)
            if frame is not None:
                self._flush()
                self._replay(item, record, frame)
                return
        if item.image is None:
            self._flush()
            self._emit_failed(item, item.error)
            return
        started = time.perf_counter()
        try:
            frame, detections = self._detect(item)
        except Exception as exc:    # noqa: BLE001 - a frame that fails is recorded, the run goes on
            self._flush()
            self._emit_failed(item, f'detection failed: {type(exc).__name__}: {exc}')
            return
        timings = {f'{name}_ms': seconds * 1e3 for name, seconds in self.pipeline.last_timings.items()}
        self._pending.append((item, frame, detections, timings, time.perf_counter() - started))
        self._pending_crops += len(detections)
        # Batches hold at most --batch-size crops and --batch-size frames; frames without a hand wait only for
        # earlier frames with hands (kept in order), so memory stays bounded on long hand-free inputs.
        if self._pending_crops == 0 or self._pending_crops >= self.args.batch_size or \
                len(self._pending) >= self.args.batch_size:
            self._flush()

    def _detect(self, item):
        """Detection (MediaPipe, or the --boxes file) and tracking of one frame: (frame, detections)."""
        detections = None
        if self.args.boxes is not None:
            from hamer_ros.detection import boxes_for_frame
            detections = boxes_for_frame(self.boxes, item.key)
        return self.pipeline.find_hands(item.image, item.stamp_ns, self.intrinsics or item.intrinsics, detections)

    def _flush(self) -> None:
        """HaMeR on the crops of all pending frames in one forward, then their outputs in input order."""
        pending, self._pending, self._pending_crops = self._pending, [], 0
        if not pending:
            return
        model = self.pipeline.model
        reconstructions = [None] * len(pending)
        model_seconds = 0.0
        if model is not None and any(d for _, _, d, _, _ in pending):
            started = time.perf_counter()
            try:
                reconstructions = model.predict_frames([(item.image, d, frame.intrinsics)
                                                        for item, frame, d, _, _ in pending])
            except Exception:    # noqa: BLE001 - retried frame by frame below, so that only the bad frame fails
                reconstructions = [None] * len(pending)
            model_seconds = time.perf_counter() - started
        crops = max(1, sum(len(d) for _, _, d, _, _ in pending))
        for (item, frame, detections, timings, seconds), recons in zip(pending, reconstructions):
            share = model_seconds * len(detections) / crops
            if detections:
                started = time.perf_counter()
                try:
                    self.pipeline.add_hands(frame, item.image, detections, recons)
                except Exception as exc:    # noqa: BLE001
                    self._emit_failed(item, f'reconstruction failed: {type(exc).__name__}: {exc}')
                    continue
                share += time.perf_counter() - started
                timings['model_ms' if model is not None else 'landmarks_ms'] = share * 1e3
            self.frame_seconds.append(seconds + share)
            self._emit(item, frame, timings)

    # ------------------------------------------------------------------------------------------ outputs

    def _overlay(self, item, frame):
        from hamer_ros.io.render import render_overlay

        return render_overlay(item.image, frame.hands, frame.intrinsics, self.model_faces,
                              side_view=self.args.side_view)

    def _write_outputs(self, item, frame, fresh: bool) -> None:
        from hamer_ros.io.offline import write_meshes

        if self.overlays is not None and (fresh or not self.overlays.exists(item.stem)):
            self.overlays.write(item.stem, self._overlay(item, frame))
        if self.args.save_mesh and self.faces is not None:
            write_meshes(self.args.out / MESHES, item.stem, frame, self.faces)
        if self.bag is not None:
            self.bag.write(frame, item.frame_id, item.log_time_ns)

    def _emit(self, item, frame, timings) -> None:
        from hamer_ros.io.offline import frame_to_record

        self._write_outputs(item, frame, fresh=True)
        record = frame_to_record(frame, item, self.faces, self.mode, timings)
        self.store.write(item.stem, record)     # last: a record means the frame's outputs are complete
        self._count(record)

    def _finished(self, item):
        """(record, frame) of a frame an earlier run finished; (None, None) when it must be computed: no usable
        record (unreadable, damaged, of another frame) or a failed one (failures are tried again)."""
        from hamer_ros.io.offline import RECORD_FORMAT, record_to_frame

        try:
            record = self.store.read(item.stem)
            if not isinstance(record, dict) or record.get('format') != RECORD_FORMAT or \
                    record.get('index') != item.index or record.get('status') not in ('ok', 'no_hands', 'failed'):
                raise ValueError(f'record {self.store.path(item.stem)} is not a complete record of this frame')
            if record['status'] == 'failed':
                return None, None
            return record, record_to_frame(record)
        except Exception as exc:    # noqa: BLE001 - whatever is wrong with it, the frame is computed again
            print(f'recomputing frame {item.key}: {type(exc).__name__}: {exc}')
            return None, None

    def _replay(self, item, record, frame) -> None:
        """A frame finished by an earlier run: outputs rebuilt from its record. Detection and tracking run on its
        image again (their results are not used), so that the detector's video state (MediaPipe tracks hands
        from one frame to the next) and the tracker's ids are those of an uninterrupted run."""
        if not self.source.is_sequence:
            pass    # image-mode detection and no tracker: nothing carries over from frame to frame
        elif item.image is not None:
            self._detect(item)
        else:
            self.pipeline.tracker.update([hand.detection for hand in frame.hands], frame.stamp_ns * 1e-9)
        self._write_outputs(item, frame, fresh=False)
        self.counts['resumed'] += 1
        self._count(record)

    def _emit_failed(self, item, error: str) -> None:
        from hamer_ros.io.offline import OverlayVideo, failed_record

        if isinstance(self.overlays, OverlayVideo):     # keep one picture per input frame
            self.overlays.write(item.stem, self.overlays.blank(f'frame {item.key}: {error}'))
        record = failed_record(item, error)
        self.store.write(item.stem, record)
        self._count(record)

    def _count(self, record) -> None:
        self.counts[record['status']] += 1
        self.counts['hands'] += len(record['hands'])

    def _summarise(self, seconds: float, interrupted: bool) -> None:
        import numpy as np

        counts, out = self.counts, self.args.out
        per_frame = np.array(self.frame_seconds) * 1e3
        announced = self.source.total
        summary = dict(counts, announced_frames=announced, mode=self.mode, seconds=round(seconds, 3),
                       interrupted=interrupted,
                       frame_ms_median=float(np.median(per_frame)) if per_frame.size else None,
                       frame_ms_p90=float(np.percentile(per_frame, 90)) if per_frame.size else None,
                       bag=str(out / BAG) if self.bag else None, bag_messages=dict(self.bag.counts) if self.bag else None)
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
        timing = (f'; {summary["frame_ms_median"]:.0f} ms per computed frame (median)' if per_frame.size else '')
        announces = (f' (the input announces {announced})' if announced is not None and announced != counts['frames']
                     else '')
        print(f'{counts["frames"]} frames{announces}: {counts["ok"]} with hands, {counts["no_hands"]} without, '
              f'{counts["failed"]} failed, {counts["resumed"]} taken from an earlier run; {counts["hands"]} hands'
              f'{timing}; {seconds:.1f} s\nresults in {out}')
        if counts['failed']:
            print(f'failed frames: see "error" in their records under {out / RESULTS}')
        if interrupted:
            print(f'interrupted: finished frames are saved; continue with --resume --out {out}')
