"""`python -m hamer_ros live [SOURCE]`: the webcam demo without ROS.

SOURCE is a camera index (default 0), a video file or a stream URL, read with OpenCV. Each frame goes through
the same pipeline as the node (MediaPipe -> tracker -> HaMeR, or landmarks-only without weights) and its overlay
is shown in a window (q or Esc quits), or with --headless the processing rate is printed instead.
A camera delivers frames in real time: when processing is slower, older frames are dropped (the newest is
processed), as the node does. A file is processed frame by frame.
"""
from __future__ import annotations

import time
from pathlib import Path

from hamer_ros.errors import SetupError

WINDOW = 'hamer_ros live (q quits)'


def add_arguments(parser) -> None:
    from hamer_ros.cli.infer import add_model_arguments

    parser.add_argument('source', nargs='?', default='0', help='camera index (default 0), video file or stream URL')
    parser.add_argument('--headless', action='store_true', help='no window: print the processing rate')
    parser.add_argument('--max-frames', type=int, help='stop after this many frames')
    parser.add_argument('--print-every', type=float, default=2.0, help='seconds between rate lines (default 2)')
    parser.add_argument('--save', type=Path, help='also write the overlays to this video file (.mp4)')
    parser.add_argument('--side-view', action='store_true', help='draw the meshes turned by 90 degrees beside')
    parser.add_argument('--mirrored', action='store_true', help='the source delivers mirrored (selfie-view) '
                        'pictures: swap the detected sides back to the subject\'s own')
    parser.add_argument('--width', type=int, help='ask the camera for this width')
    parser.add_argument('--height', type=int, help='ask the camera for this height')
    from hamer_ros.detection.factory import add_search_arguments
    add_search_arguments(parser)
    add_model_arguments(parser)


def _open(source: str):
    import cv2

    is_camera = source.isdigit()
    capture = cv2.VideoCapture(int(source) if is_camera else source)
    if not capture.isOpened():
        what = f'camera {source}' if is_camera else source
        raise SetupError(f'cannot open {what}: check the device (ls /dev/video*) or the path/URL' if is_camera
                         else f'cannot open {what} as a video or stream (missing file, or a codec OpenCV lacks)')
    return capture, is_camera


class RateMeter:
    """Frames per second and per-stage times over the last `period` seconds."""

    def __init__(self, period: float):
        self.period = period
        self.started = self.window_start = time.perf_counter()
        self.frames = self.window_frames = self.hands = 0
        self.frame_seconds = []
        self.window_stages = {}

    def add(self, seconds: float, stages: dict, hands: int):
        self.frames += 1
        self.window_frames += 1
        self.hands += hands
        self.frame_seconds.append(seconds)
        for name, value in stages.items():
            self.window_stages.setdefault(name, []).append(value)

    def line(self):
        """A rate line when the period is over (else None)."""
        now = time.perf_counter()
        if now - self.window_start < self.period or not self.window_frames:
            return None
        rate = self.window_frames / (now - self.window_start)
        stages = ', '.join(f'{name} {1e3 * sum(v) / len(v):.0f}' for name, v in self.window_stages.items())
        text = f'{rate:5.1f} fps ({1e3 / rate:.0f} ms/frame; {stages} ms); {self.frames} frames, {self.hands} hands'
        self.window_start, self.window_frames, self.window_stages = now, 0, {}
        return text


def run(args) -> int:
    import cv2
    import numpy as np

    from hamer_ros.detection.factory import detector_from_args
    from hamer_ros.io.offline import OverlayVideo, capture_fps, load_model_or_none
    from hamer_ros.pipeline import HandPipeline
    from hamer_ros.io.render import render_overlay
    from hamer_ros.detection.tracking import HandTracker

    if not args.headless:
        try:
            cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise SetupError('this OpenCV has no window support (opencv-python-headless, or no display): use '
                             '--headless, or install opencv-python') from None
    capture, is_camera = _open(args.source)
    if is_camera:
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)     # keep only the newest frame in the driver
        if args.width:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, args.width)
        if args.height:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, args.height)
    model = load_model_or_none(args)
    if args.threads:
        cv2.setNumThreads(args.threads)
    print(f'source: {"camera " if is_camera else ""}{args.source}; model: '
          f'{model.describe() if model is not None else "none (landmarks-only)"}')
    fps = capture_fps(capture)     # file stamps are index / fps: a NaN or negative rate would break them
    detector = detector_from_args(args, 'video', mirrored=args.mirrored)
    pipeline = HandPipeline(detector, HandTracker(), model)
    saver = OverlayVideo(args.save, fps) if args.save else None
    meter = RateMeter(args.print_every)
    index = 0
    try:
        while args.max_frames is None or index < args.max_frames:
            ok, image = capture.read()
            if not ok:
                if is_camera:
                    raise SetupError(f'camera {args.source} stopped delivering frames')
                break
            stamp_ns = time.monotonic_ns() if is_camera else round(index * 1e9 / fps)
            started = time.perf_counter()
            frame = pipeline.process(image, stamp_ns)
            overlay = render_overlay(image, frame.hands, frame.intrinsics,
                                     model.faces if model is not None else None, side_view=args.side_view)
            seconds = time.perf_counter() - started
            meter.add(seconds, dict(pipeline.last_timings), len(frame.hands))
            index += 1
            if saver is not None:
                saver.write(str(index), overlay)
            if args.headless:
                line = meter.line()
                if line:
                    print(line, flush=True)
            else:
                cv2.imshow(WINDOW, overlay)
                if cv2.waitKey(1) & 0xFF in (ord('q'), 27):
                    break
    except KeyboardInterrupt:
        pass
    finally:
        capture.release()
        detector.close()
        if saver is not None:
            saver.close()
        if not args.headless:
            cv2.destroyAllWindows()
    if meter.frames:
        median = 1e3 * float(np.median(meter.frame_seconds))
        total = time.perf_counter() - meter.started
        print(f'{meter.frames} frames in {total:.1f} s ({meter.frames / total:.1f} fps overall), median '
              f'{median:.0f} ms per frame, {meter.hands} hands' + (f'; overlays in {args.save}' if saver else ''))
    else:
        print('no frame was read')
    return 0
