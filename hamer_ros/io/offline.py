"""Offline inputs and outputs: frames from an image, a folder, a video or a rosbag2 bag; per-frame records,
overlays, OBJ meshes and an output bag. Used by `python -m hamer_ros infer` (and `live` for its overlays).

Every input frame becomes one `InputFrame`, also when it cannot be read (then `image` is None and `error`
says why), so that the caller can write a record for every frame: nothing is silently lost.

Records (one file per frame, `results/<stem>.json` or `.npz`) hold everything a `hamer_ros/HandMesh`
carries plus what is needed to rebuild the `FrameResult` exactly (`record_to_frame`): `infer --resume`
rebuilds the outputs of finished frames from them instead of running the network again.
"""
from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import cv2
import numpy as np

from hamer_ros.ros.camera_info import camera_info_intrinsics
from hamer_ros.errors import InputError, MissingFileError, SetupError
from hamer_ros.types import CameraIntrinsics, FrameResult, HandReconstruction, HandResult

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
RECORD_FORMAT = 'hamer_ros.frame/1'
DEFAULT_FPS = 30.0


# ================================================================================================ inputs

@dataclass
class InputFrame:
    """One frame of the input, readable or not."""
    index: int                          # position in the input, from 0
    key: str                            # file name (image/folder) or frame index (video/bag): boxes-file key
    stem: str                           # output file stem, unique within the input
    stamp_ns: int                       # the image's time (bag: header stamp; video/sequence: index / fps)
    image: Optional[np.ndarray]         # BGR uint8, None when it could not be read
    error: Optional[str] = None         # why `image` is None
    frame_id: str = 'camera'            # the image's optical frame (bag: header.frame_id)
    log_time_ns: Optional[int] = None   # bag input: when the recorder got the image
    intrinsics: Optional[CameraIntrinsics] = None   # from CameraInfo (bag input), else None


class FrameSource:
    """Iterable of `InputFrame`s with what the caller needs to know up front."""
    kind = ''            # 'image', 'folder', 'video', 'bag'
    is_sequence = False  # consecutive frames of one camera (video mode detection, tracking)
    total: Optional[int] = None
    fps: float = DEFAULT_FPS
    description = ''

    def __iter__(self) -> Iterator[InputFrame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> 'FrameSource':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _too_large(width: int, height: int, max_pixels: int, what: str) -> Optional[str]:
    if width * height <= max_pixels:
        return None
    return (f'{what} is {width}x{height} = {width * height / 1e6:.1f} Mpx, more than the limit of '
            f'{max_pixels / 1e6:.1f} Mpx: resize it, or raise the limit with --max-image-pixels')


def read_image(path: Path, max_pixels: Optional[int] = None):
    """(BGR image, None) or (None, why not) for an image file. Its size is read from the header first (PNG,
    JPEG, BMP, WebP, PNM: `image_header`), so an image over `max_pixels` (default: the node's limit,
    image_conversion.DEFAULT_MAX_PIXELS) is refused before it is decoded; other formats are checked once
    decoded (OpenCV itself refuses images over 2**30 px)."""
    from hamer_ros.ros.image_conversion import DEFAULT_MAX_PIXELS
    from hamer_ros.io.image_header import declared_image_size

    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, f'cannot read {path} ({exc.strerror})'
    declared = declared_image_size(data)
    if declared is not None and (error := _too_large(*declared, max_pixels, f'{path}')):
        return None, error
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        return None, f'cannot read {path} as an image (corrupt, or a format OpenCV does not read)'
    error = _too_large(image.shape[1], image.shape[0], max_pixels, f'{path}')
    return (None, error) if error else (image, None)


class ImageFilesSource(FrameSource):
    """One image, or the images of a folder in name order (`sequence`: frames of one camera at `fps`)."""

    def __init__(self, path: Path, sequence: bool = False, fps: float = DEFAULT_FPS,
                 max_pixels: Optional[int] = None):
        path = Path(path)
        self.max_pixels = max_pixels
        if path.is_dir():
            self.kind = 'folder'
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not self.files:
                raise MissingFileError(f'folder {path} holds no images ({", ".join(IMAGE_SUFFIXES)})')
        else:
            self.kind = 'image'
            self.files = [path]
        self.is_sequence = bool(sequence)
        self.fps = float(fps)
        self.total = len(self.files)
        self.description = f'{self.kind} {path} ({self.total} image{"s" if self.total != 1 else ""})'
        stems = [p.stem for p in self.files]
        # Two files differing only in their suffix (a.png, a.jpg) keep the suffix in their output names.
        self._stems = [p.stem if stems.count(p.stem) == 1 else p.name.replace('.', '_') for p in self.files]

    def __iter__(self) -> Iterator[InputFrame]:
        for index, (path, stem) in enumerate(zip(self.files, self._stems)):
            image, error = read_image(path, self.max_pixels)
            stamp = round(index * 1e9 / self.fps) if self.is_sequence else 0
            yield InputFrame(index, path.name, stem, stamp, image, error)


def capture_fps(capture) -> float:
    """The frame rate a cv2.VideoCapture reports, or DEFAULT_FPS where it reports none (0, NaN, negative)."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps and np.isfinite(fps) and fps > 0 else DEFAULT_FPS


class VideoSource(FrameSource):
    """A video file or stream through cv2.VideoCapture; stamps are index / fps (the container's rate).

    A frame that cannot be decoded (a corrupt middle, a truncated end) does not end the input: it comes out as a
    failed frame with the reason, the reader seeks to the next frame and goes on, up to the number of frames the
    container announces. After `MAX_CONSECUTIVE_FAILURES` failed frames in a row the rest of the announced frames
    are reported failed without trying (a truncated file: seeking past its end finds nothing). A stream (no frame
    count) ends at its first failed read."""
    kind = 'video'
    is_sequence = True
    MAX_CONSECUTIVE_FAILURES = 64

    def __init__(self, path, max_pixels: Optional[int] = None):
        from hamer_ros.ros.image_conversion import DEFAULT_MAX_PIXELS

        self.path = path
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise InputError(f'cannot open {path} as a video (missing file, or a codec OpenCV lacks)')
        width, height = (int(self.capture.get(p)) for p in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        too_large = _too_large(width, height, DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
                               f'video {path}: its frame')
        if too_large:
            self.capture.release()
            raise InputError(too_large)
        self.fps = capture_fps(self.capture)
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.total = count if count > 0 else None
        self.decoded = 0
        self.failed = 0
        self.description = f'video {path} ({self.total or "?"} frames at {self.fps:.3g} fps)'

    def _frame(self, index: int, image=None, error=None) -> InputFrame:
        return InputFrame(index, str(index), f'{index:06d}', round(index * 1e9 / self.fps), image, error)

    def __iter__(self) -> Iterator[InputFrame]:
        index = failures_in_a_row = 0
        while True:
            ok, image = self.capture.read()
            if ok:
                self.decoded += 1
                failures_in_a_row = 0
                yield self._frame(index, image)
                index += 1
                continue
            if self.total is None or index >= self.total:
                break       # the end (of a stream, or of the frames the container announces)
            failures_in_a_row += 1
            if failures_in_a_row > self.MAX_CONSECUTIVE_FAILURES:
                why = (f'not read: the {self.MAX_CONSECUTIVE_FAILURES} frames before could not be decoded either; the '
                       f'file ends early (truncated?) although its container announces {self.total} frames')
                for rest in range(index, self.total):
                    self.failed += 1
                    yield self._frame(rest, error=why)
                break
            self.failed += 1
            yield self._frame(index, error=f'frame {index} of {self.total} cannot be decoded (corrupt or truncated '
                              'video data); the next frames are read on')
            index += 1
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, index)

    def close(self) -> None:
        self.capture.release()


def intrinsics_from_camera_info(info, width: int, height: int) -> Optional[CameraIntrinsics]:
    """Intrinsics from a CameraInfo's K, or None when K is unusable or meant for another image size."""
    return camera_info_intrinsics(info, width, height)[0]


def default_camera_info_topic(image_topic: str) -> str:
    """The CameraInfo topic beside an image topic: /cam/image_raw(/compressed) -> /cam/camera_info."""
    parts = image_topic.rstrip('/').split('/')
    if parts[-1] == 'compressed':
        parts = parts[:-1]
    return '/'.join(parts[:-1] + ['camera_info'])


class BagSource(FrameSource):
    """The Image or CompressedImage messages of one topic of a rosbag2 bag (sqlite3 or MCAP), with the
    intrinsics of the bag's CameraInfo (the latest one recorded before each image, else the first one)."""
    kind = 'bag'
    is_sequence = True

    def __init__(self, path, topic: Optional[str] = None, camera_info_topic: Optional[str] = None,
                 max_pixels: Optional[int] = None):
        from hamer_ros.io import bag_io
        from hamer_ros.ros.image_conversion import DEFAULT_MAX_PIXELS

        self.max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        self.reader = bag_io.BagReader(path)
        try:
            self.topic = self.reader.image_topic(topic)
            self.total = self.reader.count(self.topic)
            info_topic = camera_info_topic if camera_info_topic is not None else \
                default_camera_info_topic(self.topic)
            topics = self.reader.topics
            if camera_info_topic and topics.get(camera_info_topic, ('',))[0] != bag_io.CAMERA_INFO_TYPE:
                raise InputError(f'--camera-info-topic {camera_info_topic} is not a CameraInfo topic of {path}')
            self.camera_info_topic = info_topic if topics.get(info_topic, ('',))[0] == bag_io.CAMERA_INFO_TYPE \
                else None
            infos = [(m.log_time_ns, m.message) for m in self.reader.messages([self.camera_info_topic])
                     if m.message is not None] if self.camera_info_topic else []
            infos.sort(key=lambda pair: pair[0])
            self._camera_info_times = [stamp for stamp, _ in infos]
            self._camera_infos = [info for _, info in infos]
        except Exception:
            self.reader.close()
            raise
        self.fps = self._rate()
        self.unreadable = self.reader.unreadable(self.topic)
        info = f', CameraInfo {self.camera_info_topic}' if self.camera_info_topic else ', no CameraInfo'
        damage = f'; {self.reader.damage}' if self.reader.damage else ''
        self.description = f'bag {path}: {self.topic} ({self.total} images{info}){damage}'

    def _rate(self) -> float:
        steps = np.diff(self.reader.log_times(self.topic, 50))
        steps = steps[steps > 0]
        return float(1e9 / np.median(steps)) if steps.size else DEFAULT_FPS

    def _camera_info_at(self, log_time_ns: int):
        """The latest CameraInfo recorded at or before `log_time_ns`, else the first one (binary search)."""
        if not self._camera_infos:
            return None
        return self._camera_infos[max(0, bisect.bisect_right(self._camera_info_times, log_time_ns) - 1)]

    def __iter__(self) -> Iterator[InputFrame]:
        from hamer_ros.io import bag_io
        from hamer_ros.ros.image_conversion import compressed_msg_to_bgr, image_msg_to_bgr

        index = -1
        for index, item in enumerate(self.reader.messages([self.topic])):
            key, stem = str(index), f'{index:06d}'
            if item.message is None:
                yield InputFrame(index, key, stem, item.log_time_ns, None, item.error, log_time_ns=item.log_time_ns)
                continue
            header = item.message.header
            image, error = None, None
            try:
                convert = compressed_msg_to_bgr if item.msgtype.endswith('CompressedImage') else image_msg_to_bgr
                image = convert(item.message, self.max_pixels)
            except ValueError as exc:
                error = str(exc)
            intrinsics = None
            info = self._camera_info_at(item.log_time_ns)
            if image is not None and info is not None:
                intrinsics = intrinsics_from_camera_info(info, image.shape[1], image.shape[0])
            yield InputFrame(index, key, stem, bag_io.stamp_ns(header.stamp), image, error,
                             frame_id=header.frame_id or 'camera', log_time_ns=item.log_time_ns,
                             intrinsics=intrinsics)
        # Messages the bag announces (metadata.yaml) beyond its readable part: one failed frame each.
        for index in range(index + 1, index + 1 + self.unreadable):
            yield InputFrame(index, str(index), f'{index:06d}', 0, None,
                             f'not readable: {self.reader.damage}; this message lies beyond the readable part')

    def close(self) -> None:
        self.reader.close()


def is_bag(path: Path) -> bool:
    path = Path(path)
    return (path.is_dir() and (path / 'metadata.yaml').is_file()) or path.suffix.lower() in ('.mcap', '.db3')


def open_source(path, topic: Optional[str] = None, camera_info_topic: Optional[str] = None,
                sequence: bool = False, fps: float = DEFAULT_FPS, max_pixels: Optional[int] = None) -> FrameSource:
    """The right reader for `path`: a bag (folder with metadata.yaml, .mcap, .db3), a folder of images, an
    image file, or else a video file / stream URL for OpenCV. Images over `max_pixels` (default: the node's
    limit) are failed frames; a video whose frames are larger is refused."""
    text = str(path)
    path = Path(path)
    if '://' not in text and not path.exists():
        raise MissingFileError(f'input {path} does not exist')
    if is_bag(path):
        return BagSource(path, topic, camera_info_topic, max_pixels)
    if topic:
        raise InputError(f'--topic is for bag input; {path} is not a rosbag2 bag')
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFilesSource(path, sequence, fps, max_pixels)
    return VideoSource(text, max_pixels)


# ================================================================================================= model

def load_model_or_none(args, log=print):
    """HamerModel from the command's flags (data_dir, checkpoint, mano, device, precision, threads,
    allow_cpu_fallback, landmarks_only), or None (landmarks-only) when the data folder has no weights, saying how
    to install them.

    Explicitly named files that are missing, and weights that are present but broken, are errors."""
    from hamer_ros.provisioning import paths
    from hamer_ros.hamer.model import HamerModel

    if args.landmarks_only:
        return None
    try:
        return HamerModel.load(args.data_dir, args.checkpoint, args.mano, device=args.device,
                               precision=args.precision, threads=args.threads,
                               allow_cpu_fallback=args.allow_cpu_fallback)
    except FileNotFoundError as exc:
        if args.checkpoint is not None or args.mano is not None:
            raise
        data_dir = args.data_dir or paths.data_dir()
        log(f'no HaMeR weights: {exc}\n'
            f'-> running landmarks-only (MediaPipe joints placed in 3D, no meshes). To get meshes install the '
            f'weights:\n   python -m hamer_ros setup-weights --data-dir {data_dir}   (downloads them), or\n'
            f'   python -m hamer_ros setup-weights --from hamer_demo_data.tar.gz --data-dir {data_dir}')
        return None


# =============================================================================================== records

# HandReconstruction arrays kept in records as float32, as the network made them.
_FLOAT32_FIELDS = ('global_orient', 'hand_pose', 'betas', 'keypoints_2d', 'joint_rotations', 'pred_cam',
                   'box_center', 'focal_length')


def prepare_run_folder(out: Path, manifest: dict, owned: List[str], compared: List[str], resume: bool,
                       overwrite: bool, what: str = 'run') -> None:
    """The output folder of a resumable command (`infer`, `evaluate`): with an earlier run in it (its run.json),
    --overwrite removes the `owned` names, --resume continues it when every `compared` setting is the same (one
    missing from an older run.json is not compared), else a one-line error says what to do; then writes run.json."""
    run_file = out / 'run.json'
    if run_file.exists():
        if overwrite:
            import shutil
            for name in owned:
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        elif resume:
            try:
                earlier = json.loads(run_file.read_text())
            except ValueError as exc:
                raise InputError(f'--resume: {run_file} is unreadable ({exc}): use --overwrite to start over') \
                    from None
            changed = [k for k in compared if k in earlier and earlier[k] != manifest.get(k)]
            if changed:
                raise InputError(f'--resume: {out} holds a {what} with other {", ".join(changed)} '
                                 f'({", ".join(f"{k}={earlier.get(k)!r}" for k in changed)}); '
                                 'use another --out, or --overwrite to start over')
        else:
            raise InputError(f'{out} holds the results of an earlier {what}: pass --resume to continue it or '
                             '--overwrite to replace it')
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(manifest, indent=1))


def frame_to_record(frame: FrameResult, item: InputFrame, faces: Optional[Dict[str, np.ndarray]] = None,
                    mode: str = 'hamer', timings_ms: Optional[Dict[str, float]] = None) -> dict:
    """A frame's results as a record: JSON types plus numpy arrays (`write_record` stores both).

    Per hand, the fields of hamer_ros/HandMesh (camera frame, m; `vertices`/`keypoints_3d` = MANO-space
    + `translation`), the detection (as `detection.detection_to_json`), and for HaMeR hands the MANO joint
    rotations and crop values. `faces` (`pipeline.faces_by_side`) are stored per HaMeR hand, closed and
    wound for its side, as in HandMesh.
    """
    from hamer_ros.detection import detection_to_json

    status = 'failed' if frame.error else ('ok' if frame.hands else 'no_hands')
    hands = []
    for hand in frame.hands:
        entry = detection_to_json(hand.detection)
        recon = hand.reconstruction
        if recon is not None:
            entry.update(source='hamer', translation=np.asarray(recon.cam_t, np.float64),
                         keypoints_3d=np.asarray(recon.keypoints_camera, np.float64),
                         keypoints_2d=recon.keypoints_2d, vertices=np.asarray(recon.vertices_camera, np.float64),
                         global_orient=recon.global_orient, hand_pose=recon.hand_pose, betas=recon.betas,
                         joint_rotations=recon.joint_rotations, pred_cam=recon.pred_cam,
                         box_center=recon.box_center, box_size=float(recon.box_size),
                         focal_length=recon.focal_length)
            if faces is not None:
                entry['faces'] = np.asarray(faces[hand.detection.side], np.int64)
        else:
            entry.update(source='mediapipe', translation=np.asarray(hand.translation_mediapipe, np.float64),
                         keypoints_3d=np.asarray(hand.keypoints_camera_mediapipe, np.float64),
                         keypoints_2d=np.asarray(hand.detection.landmarks_2d, np.float64))
        hands.append(entry)
    intrinsics = frame.intrinsics
    return {'format': RECORD_FORMAT, 'index': item.index, 'key': item.key, 'stamp_ns': int(frame.stamp_ns),
            'frame_id': item.frame_id, 'log_time_ns': item.log_time_ns, 'status': status, 'error': frame.error,
            'dropped': list(frame.dropped), 'mode': mode, 'image_width': int(frame.width),
            'image_height': int(frame.height),
            'intrinsics': {'fx': intrinsics.fx, 'fy': intrinsics.fy, 'cx': intrinsics.cx, 'cy': intrinsics.cy,
                           'from_camera_info': bool(intrinsics.from_camera_info)} if intrinsics else None,
            'timings_ms': timings_ms or {}, 'hands': hands}


def failed_record(item: InputFrame, error: str) -> dict:
    """The record of a frame that produced no result (unreadable image, processing error)."""
    width, height = (item.image.shape[1], item.image.shape[0]) if item.image is not None else (0, 0)
    frame = FrameResult(width=width, height=height, intrinsics=None, stamp_ns=item.stamp_ns, error=error)
    return frame_to_record(frame, item)


def record_to_frame(record: dict) -> FrameResult:
    """The FrameResult a record was made from (HandMesh fields bit-exact)."""
    from hamer_ros.detection import detection_from_json

    intrinsics = CameraIntrinsics(**record['intrinsics']) if record.get('intrinsics') else None
    frame = FrameResult(width=record['image_width'], height=record['image_height'], intrinsics=intrinsics,
                        stamp_ns=record['stamp_ns'], error=record.get('error'), dropped=list(record['dropped']))
    for i, entry in enumerate(record['hands']):
        detection = detection_from_json(entry, f'frame {record["key"]} hand {i}')
        translation = np.asarray(entry['translation'], np.float64)
        keypoints = np.asarray(entry['keypoints_3d'], np.float64)
        if entry['source'] == 'hamer':
            arrays = {name: np.asarray(entry[name], np.float32) for name in _FLOAT32_FIELDS}
            frame.hands.append(HandResult(detection, HandReconstruction(
                is_right=detection.is_right, vertices=np.asarray(entry['vertices'], np.float64) - translation,
                keypoints_3d=keypoints - translation, cam_t=translation, box_size=float(entry['box_size']),
                **arrays)))
        else:
            frame.hands.append(HandResult(detection, keypoints_camera_mediapipe=keypoints,
                                          translation_mediapipe=translation))
    return frame


def _plain(value):
    """Numpy arrays/scalars inside a record -> JSON types."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file and rename it: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f'.{path.name}.partial')
    with open(temporary, 'wb') as f:
        write(f)
    os.replace(temporary, path)


class RecordStore:
    """The per-frame record files of an output folder (`results/<stem>.json|.npz`).

    NPZ layout: `meta` (the record without arrays, as JSON text) and `hands/<i>/<name>` per hand array.
    """

    def __init__(self, folder: Path, fmt: str = 'json'):
        if fmt not in ('json', 'npz'):
            raise InputError(f"--format must be 'json' or 'npz', got {fmt!r}")
        self.folder = Path(folder)
        self.fmt = fmt

    def path(self, stem: str) -> Path:
        return self.folder / f'{stem}.{self.fmt}'

    def exists(self, stem: str) -> bool:
        return self.path(stem).is_file()

    def write(self, stem: str, record: dict) -> Path:
        path = self.path(stem)
        if self.fmt == 'json':
            text = json.dumps(_plain(record), separators=(',', ':')).encode()
            _atomic_write(path, lambda f: f.write(text))
            return path
        meta = dict(record, hands=[])
        arrays = {}
        for i, hand in enumerate(record['hands']):
            scalars = {}
            for name, value in hand.items():
                if isinstance(value, np.ndarray) or (isinstance(value, list) and name.startswith('landmarks')):
                    arrays[f'hands/{i}/{name}'] = np.asarray(value)
                else:
                    scalars[name] = value
            meta['hands'].append(scalars)
        arrays['meta'] = np.array(json.dumps(_plain(meta)))
        _atomic_write(path, lambda f: np.savez(f, **arrays))
        return path

    def read(self, stem: str) -> dict:
        path = self.path(stem)
        try:
            if self.fmt == 'json':
                return json.loads(path.read_text())
            with np.load(path, allow_pickle=False) as data:
                record = json.loads(str(data['meta']))
                for key in data.files:
                    if key.startswith('hands/'):
                        _, index, name = key.split('/', 2)
                        record['hands'][int(index)][name] = data[key]
                return record
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f'record {path} is unreadable ({exc}): delete it to recompute that frame') from exc


# =============================================================================================== outputs

class OverlayImages:
    """One overlay image per frame: `overlays/<stem>.jpg`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def exists(self, stem: str) -> bool:
        return (self.folder / f'{stem}.jpg').is_file()

    def write(self, stem: str, image: np.ndarray) -> None:
        ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise RuntimeError(f'OpenCV could not encode the overlay of frame {stem}')
        _atomic_write(self.folder / f'{stem}.jpg', lambda f: f.write(data.tobytes()))

    def close(self) -> None:
        pass


class OverlayVideo:
    """All overlays as one MP4 video, written under a temporary name and renamed when closed.

    Frames of another size than the first are resized; a frame that could not be read shows its error on
    black, so the video keeps one picture per input frame.
    """

    def __init__(self, path: Path, fps: float):
        self.path = Path(path)
        self.fps = float(fps)
        self._temporary = self.path.with_name(f'.{self.path.stem}.partial{self.path.suffix}')
        self._writer = None
        self._size = None
        self.frames = 0

    def exists(self, stem: str) -> bool:
        return False      # a video cannot be appended to: every frame is drawn again

    def write(self, stem: str, image: np.ndarray) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (image.shape[1], image.shape[0])
            self._writer = cv2.VideoWriter(str(self._temporary), cv2.VideoWriter_fourcc(*'mp4v'), self.fps,
                                           self._size)
            if not self._writer.isOpened():
                raise SetupError(f'OpenCV cannot write the video {self.path}: use --overlay images')
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def blank(self, message: str) -> np.ndarray:
        """A black picture with `message` (for frames without an image), the video's size."""
        width, height = self._size or (640, 480)
        image = np.zeros((height, width, 3), np.uint8)
        cv2.putText(image, message[:80], (10, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
        return image

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self._temporary, self.path)


def write_meshes(folder: Path, stem: str, frame: FrameResult, faces: Dict[str, np.ndarray]) -> List[Path]:
    """One OBJ per HaMeR hand, camera frame (m), wrist closed, wound outwards for its side
    (`faces` = `pipeline.faces_by_side(model.faces)`): `<stem>_hand<i>_<side>.obj`."""
    from hamer_ros.io.mesh_io import write_obj

    written = []
    for i, hand in enumerate(frame.hands):
        if hand.reconstruction is None:
            continue
        side = hand.detection.side
        path = Path(folder) / f'{stem}_hand{i}_{side}.obj'
        comment = (f'hamer_ros: {side} hand {i} of frame {stem}, track {hand.detection.track_id}, '
                   f'camera frame (x right, y down, z forward), metres')
        written.append(write_obj(path, hand.reconstruction.vertices_camera, faces[side], comment=comment))
    return written


HANDS_BAG_TOPICS = {'/hands/mano': 'hamer_ros/msg/HandMeshArray', '/tf': 'tf2_msgs/msg/TFMessage',
                    '/hands/markers': 'visualization_msgs/msg/MarkerArray'}


class HandsBag:
    """The node's outputs for each frame, written to an MCAP bag: `/hands/mano` (every processed frame, empty
    when it has no hand, as the node publishes), `/tf` and `/hands/markers` (when there is something to
    show or to delete). Stamped with the input stamps and frame; bag time = the input's log time."""

    def __init__(self, path: Path, faces: Optional[Dict[str, np.ndarray]] = None):
        from hamer_ros.io.bag_io import BagWriter
        from hamer_ros.ros.markers import MarkerBuilder
        from hamer_ros.ros.tf_frames import HandFrameNames

        self.faces = faces
        self._writer = BagWriter(path, HANDS_BAG_TOPICS)
        self._markers = MarkerBuilder()
        self._frame_names = HandFrameNames()     # TF names that stay with each hand's track (as the node's)
        self.counts = self._writer.counts

    def write(self, frame: FrameResult, frame_id: str, log_time_ns: int) -> None:
        from hamer_ros.io import bag_io
        from hamer_ros.ros.ros_messages import hand_mesh_array
        from hamer_ros.ros.tf_frames import hand_transforms

        header = bag_io.header(frame.stamp_ns, frame_id)
        self._writer.write('/hands/mano', hand_mesh_array(frame, header, self.faces), log_time_ns)
        stems = self._frame_names.stems(frame)
        if frame.hands:
            transforms = [bag_io.to_stand_in(t) for t in hand_transforms(frame, header, stems=stems)]
            self._writer.write('/tf', bag_io.stand_in('tf2_msgs/msg/TFMessage')(transforms=transforms), log_time_ns)
        markers = self._markers.build(frame, header, self.faces)
        if markers.message.markers:
            self._writer.write('/hands/markers', markers.filled(), log_time_ns)

    def close(self) -> Path:
        return self._writer.close()
