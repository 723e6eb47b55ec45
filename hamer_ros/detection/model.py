"""The MediaPipe hand landmarker model (`hand_landmarker.task`): a user's file, or one the project builds itself.

Newer mediapipe wheels ship no model, and the usual web download is not available to this project, so the
bundle is built from a registry package (shared docs/mediapipe.md notes, "Versions and the model"):

* a `.task` bundle is a plain zip with two members of fixed names, `hand_detector.tflite` and
  `hand_landmarks_detector.tflite`;
* the mediapipe 0.10.21 wheel holds `palm_detection_full.tflite` and `hand_landmark_full.tflite`, both with the
  TFLite metadata the Tasks `HandLandmarker` needs (the palm *lite* model lacks it), so zipping them under the
  fixed names gives a working bundle.

The wheel is only read, never installed (it pins numpy<2 and pulls jax). Where things are kept:

| what | where |
|---|---|
| the bundle | `hamer_ros.provisioning.paths.cache_dir() / 'mediapipe' / 'hand_landmarker.task'` (`HAMER_ROS_CACHE_DIR` moves it) |
| the wheel it came from | the same folder, kept so that a damaged bundle can be rebuilt without the network |

Both members are checked against the SHA-256 recorded below whenever the cached bundle is used, so a damaged or
foreign file is rebuilt, never loaded.

The same wheel's pose models carry no TFLite metadata, and the Tasks `PoseLandmarker` refuses them ("Input tensor
has type float32: it requires specifying NormalizationOptions metadata"): the body-guided hand search runs them
in LiteRT instead (`detection.search_models`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Optional, Union

from hamer_ros.provisioning import paths
from hamer_ros.errors import InputError, MissingFileError, SetupError
from hamer_ros.provisioning.package_files import pip_download

log = logging.getLogger(__name__)

MEDIAPIPE_WHEEL_REQUIREMENT = 'mediapipe==0.10.21'
# Fixed by the Tasks API: the bundle's member name -> (file in the 0.10.21 wheel, SHA-256 of that file).
HAND_LANDMARKER_MEMBERS: Dict[str, tuple] = {
    'hand_detector.tflite': (
        'mediapipe/modules/palm_detection/palm_detection_full.tflite',
        '1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54'),
    'hand_landmarks_detector.tflite': (
        'mediapipe/modules/hand_landmark/hand_landmark_full.tflite',
        '11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3'),
}


def model_cache_dir() -> Path:
    return paths.cache_dir() / 'mediapipe'


def default_model_path() -> Path:
    return model_cache_dir() / 'hand_landmarker.task'


PROVISION_FIX = ('run `python -m hamer_ros check --provision` (or `python -m hamer_ros setup-weights`) once, or '
                 'give your own hand_landmarker.task (node parameter detector.model_path)')


class ModelNotProvisioned(FileNotFoundError):
    """The project's own bundle is not built yet (or damaged) and building it was not allowed here."""


def ensure_hand_landmarker_model(path: Optional[Union[str, os.PathLike]] = None, provision: bool = True) -> Path:
    """Path of a usable `hand_landmarker.task`.

    `path` given: that file, used as it is after checking it is a zip holding the two members the Tasks API
    loads (a user's own or Google's official bundle has other hashes, so none are enforced).
    `path` None: the project's own bundle, verified by hash every time. When it is missing or damaged it is
    (re)built from the mediapipe 0.10.21 wheel (which may have to be fetched with pip) if `provision`, else
    ModelNotProvisioned says how to provision it: the node never fetches anything while it runs.
    """
    if path is not None:
        path = Path(path).expanduser()
        _check_bundle(path, verify_hashes=False)
        return path
    target = default_model_path()
    problem = f'{target} does not exist'
    if target.exists():
        try:
            _check_bundle(target, verify_hashes=True)
            return target
        except ValueError as exc:
            problem = str(exc)
            if provision:
                log.warning('rebuilding the cached hand landmarker model: %s', exc)
    if not provision:
        raise ModelNotProvisioned(f'the MediaPipe hand model is not provisioned ({problem}): {PROVISION_FIX}')
    build_hand_landmarker_task(mediapipe_wheel(model_cache_dir()), target)
    return target


def build_hand_landmarker_task(wheel: Path, out: Path) -> None:
    """Zip the two tflite models of the 0.10.21 wheel into a `.task` bundle at `out` (written atomically)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            payloads = {member: archive.read(source) for member, (source, _) in HAND_LANDMARKER_MEMBERS.items()}
    except (zipfile.BadZipFile, KeyError) as exc:
        raise SetupError(f'{wheel} is not the {MEDIAPIPE_WHEEL_REQUIREMENT} wheel ({exc}); delete it and run '
                         'again to fetch it anew') from exc
    for member, data in payloads.items():
        expected = HAND_LANDMARKER_MEMBERS[member][1]
        if _sha256(data) != expected:
            raise SetupError(f'{HAND_LANDMARKER_MEMBERS[member][0]} in {wheel} has an unexpected SHA-256; '
                             'delete the wheel and run again, or pass your own hand_landmarker.task')
    out.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: a reader (another process provisioning at the same time) sees the old file or the whole new one.
    fd, tmp_name = tempfile.mkstemp(prefix='.hand_landmarker.', suffix='.task', dir=out.parent)
    try:
        with os.fdopen(fd, 'wb') as raw, zipfile.ZipFile(raw, 'w', zipfile.ZIP_STORED) as bundle:
            for member, data in payloads.items():
                bundle.writestr(member, data)
        os.chmod(tmp_name, 0o644)    # mkstemp makes it private; a model is no secret
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    log.info('built %s from %s', out, wheel.name)


def _check_bundle(path: Path, verify_hashes: bool) -> None:
    if not path.is_file():
        raise MissingFileError(f'hand landmarker model {path} does not exist: give the path of a '
                               'hand_landmarker.task file, or none to let hamer_ros build its own')
    try:
        with zipfile.ZipFile(path) as bundle:
            names = set(bundle.namelist())
            missing = sorted(set(HAND_LANDMARKER_MEMBERS) - names)
            if missing:
                raise InputError(f'hand landmarker model {path} lacks {", ".join(missing)}: a hand_landmarker.task '
                                 f'bundle is a zip holding {" and ".join(HAND_LANDMARKER_MEMBERS)}')
            if verify_hashes:
                for member, (_, expected) in HAND_LANDMARKER_MEMBERS.items():
                    if _sha256(bundle.read(member)) != expected:
                        raise InputError(f'{member} in {path} has an unexpected SHA-256')
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
        raise InputError(f'hand landmarker model {path} is not a readable zip bundle ({exc}): give a valid '
                         'hand_landmarker.task, or none to let hamer_ros build its own') from exc


def mediapipe_wheel(folder: Path, fetch: bool = True) -> Path:
    """The 0.10.21 wheel in `folder` (the source of every MediaPipe model hamer_ros uses), fetched with pip (no
    install, no dependencies) when not there yet and `fetch`; else ModelNotProvisioned says how to provision it."""
    cached = sorted(folder.glob('mediapipe-0.10.21-*.whl'))
    if cached:
        return cached[0]
    if not fetch:
        raise ModelNotProvisioned(f'the MediaPipe models are not provisioned ({folder} has no '
                                  f'{MEDIAPIPE_WHEEL_REQUIREMENT} wheel): {PROVISION_FIX}')
    log.info('fetching %s to build the hand landmarker model', MEDIAPIPE_WHEEL_REQUIREMENT)
    return pip_download(MEDIAPIPE_WHEEL_REQUIREMENT, folder,
                        advice='it holds the hand landmarker model: make the package index reachable, or pass the '
                               'path of a hand_landmarker.task file')


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
