"""`python -m hamer_ros infer INPUT --out DIR`: hand meshes for an image, a folder, a video or a rosbag2 bag.

DIR receives, for every input frame (also frames without a hand or that failed, with the reason):
  results/<stem>.json|.npz   the frame's record (hamer_ros.offline.frame_to_record: HandMesh fields + status)
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
import shutil
import time
from pathlib import Path

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
    parser.add_argument('--num-hands', type=int, default=2, help='most hands MediaPipe reports per frame')
    parser.add_argument('--mirrored', action='store_true', help='selfie-view input: swap the detected sides back')
    add_model_arguments(parser)
    parser.add_argument('--resume', action='store_true', help='continue an interrupted run in --out')
    parser.add_argument('--overwrite', action='store_true', help='replace the results of an earlier run in --out')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')


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
        raise ValueError(f'--batch-size must be at least 1, got {args.batch_size}')
    if args.resume and args.overwrite:
        raise ValueError('--resume and --overwrite exclude each other')
    from hamer_ros.offline import open_source

    with open_source(args.input, args.topic, args.camera_info_topic, args.sequence, args.fps) as source:
        return InferRun(args, source).run()


class InferRun:
    """One `infer` run: frames in, detection per frame, HaMeR batched across frames, outputs in order."""

    def __init__(self, args, source):
        self.args = args
        self.source = source

    # ------------------------------------------------------------------------------------------ set-up

    def _prepare_folder(self, manifest: dict) -> None:
        out = self.args.out
        run_file = out / RUN_FILE
        if run_file.exists():
            if self.args.overwrite:
                for name in (RESULTS, OVERLAYS, MESHES, BAG, VIDEO, RUN_FILE, SUMMARY_FILE):
                    target = out / name
                    if target.is_dir():
                        shutil.rmtree(target)
                    elif target.exists():
                        target.unlink()
            elif self.args.resume:
                earlier = json.loads(run_file.read_text())
                changed = [k for k in ('input', 'topic', 'format', 'mode') if earlier.get(k) != manifest.get(k)]
                if changed:
                    raise ValueError(f'--resume: {out} holds a run with other {", ".join(changed)} '
                                     f'({", ".join(f"{k}={earlier.get(k)!r}" for k in changed)}); '
                                     'use another --out, or --overwrite to start over')
            else:
                raise ValueError(f'{out} holds the results of an earlier run: pass --resume to continue it or '
                                 '--overwrite to replace it')
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_FILE).write_text(json.dumps(manifest, indent=1))

    def _make_pipeline(self, model):
        from hamer_ros.pipeline import HandPipeline

        detector = tracker = None
        if self.args.boxes is None:
            from hamer_ros.detection import HandDetector
            try:
                detector = HandDetector(running_mode='video' if self.source.is_sequence else 'image',
                                        num_hands=self.args.num_hands, mirrored=self.args.mirrored)
            except ImportError as exc:
                raise RuntimeError(f'MediaPipe is not installed ({exc}): pip install mediapipe, or give the hands '
                                   'with --boxes FILE') from exc
        if self.source.is_sequence:
            from hamer_ros.tracking import HandTracker
            tracker = HandTracker()
        return HandPipeline(detector, tracker, model)

    # ------------------------------------------------------------------------------------------ running

    def run(self) -> int:
        import cv2
        from tqdm import tqdm

        from hamer_ros.offline import HandsBag, OverlayImages, OverlayVideo, RecordStore, load_model_or_none
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
        self._prepare_folder({'input': str(Path(args.input).resolve()) if '://' not in args.input else args.input,
                              'topic': getattr(source, 'topic', None), 'format': args.format, 'mode': self.mode,
                              'model': model.describe() if model is not None else None,
                              'batch_size': args.batch_size})
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
        self._pending = []
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
            try:
                record = self.store.read(item.stem)
            except ValueError as exc:
                record = None
                print(f'recomputing frame {item.key}: {exc}')
            if record is not None and record['status'] != 'failed':     # failures are tried again
                self._flush()
                self._replay(item, record)
                return
        if item.image is None:
            self._flush()
            self._emit_failed(item, item.error)
            return
        detections = None
        if self.args.boxes is not None:
            from hamer_ros.detection import boxes_for_frame
            detections = boxes_for_frame(self.boxes, item.key)
        started = time.perf_counter()
        try:
            frame, detections = self.pipeline.find_hands(item.image, item.stamp_ns, self.intrinsics or
                                                         item.intrinsics, detections)
        except Exception as exc:    # noqa: BLE001 - a frame that fails is recorded, the run goes on
            self._flush()
            self._emit_failed(item, f'detection failed: {type(exc).__name__}: {exc}')
            return
        timings = {f'{name}_ms': seconds * 1e3 for name, seconds in self.pipeline.last_timings.items()}
        self._pending.append((item, frame, detections, timings, time.perf_counter() - started))
        if sum(len(d) for _, _, d, _, _ in self._pending) >= self.args.batch_size:
            self._flush()

    def _flush(self) -> None:
        """HaMeR on the crops of all pending frames in one forward, then their outputs in input order."""
        pending, self._pending = self._pending, []
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
        from hamer_ros.render import render_overlay

        return render_overlay(item.image, frame.hands, frame.intrinsics, self.model_faces,
                              side_view=self.args.side_view)

    def _write_outputs(self, item, frame, fresh: bool) -> None:
        from hamer_ros.offline import write_meshes

        if self.overlays is not None and (fresh or not self.overlays.exists(item.stem)):
            self.overlays.write(item.stem, self._overlay(item, frame))
        if self.args.save_mesh and self.faces is not None:
            write_meshes(self.args.out / MESHES, item.stem, frame, self.faces)
        if self.bag is not None:
            self.bag.write(frame, item.frame_id, item.log_time_ns)

    def _emit(self, item, frame, timings) -> None:
        from hamer_ros.offline import frame_to_record

        self._write_outputs(item, frame, fresh=True)
        record = frame_to_record(frame, item, self.faces, self.mode, timings)
        self.store.write(item.stem, record)     # last: a record means the frame's outputs are complete
        self._count(record)

    def _replay(self, item, record) -> None:
        """A frame finished by an earlier run: outputs rebuilt from its record; the tracker sees its hands so
        that later frames keep their track ids."""
        from hamer_ros.offline import record_to_frame

        frame = record_to_frame(record)
        if self.pipeline.tracker is not None:
            self.pipeline.tracker.update([hand.detection for hand in frame.hands], frame.stamp_ns * 1e-9)
        self._write_outputs(item, frame, fresh=False)
        self.counts['resumed'] += 1
        self._count(record)

    def _emit_failed(self, item, error: str) -> None:
        from hamer_ros.offline import OverlayVideo, failed_record

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
        summary = dict(counts, mode=self.mode, seconds=round(seconds, 3), interrupted=interrupted,
                       frame_ms_median=float(np.median(per_frame)) if per_frame.size else None,
                       frame_ms_p90=float(np.percentile(per_frame, 90)) if per_frame.size else None,
                       bag=str(out / BAG) if self.bag else None, bag_messages=dict(self.bag.counts) if self.bag else None)
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
        timing = (f'; {summary["frame_ms_median"]:.0f} ms per computed frame (median)' if per_frame.size else '')
        print(f'{counts["frames"]} frames: {counts["ok"]} with hands, {counts["no_hands"]} without, '
              f'{counts["failed"]} failed, {counts["resumed"]} taken from an earlier run; {counts["hands"]} hands'
              f'{timing}; {seconds:.1f} s\nresults in {out}')
        if counts['failed']:
            print(f'failed frames: see "error" in their records under {out / RESULTS}')
        if interrupted:
            print(f'interrupted: finished frames are saved; continue with --resume --out {out}')
