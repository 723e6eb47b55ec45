"""Hands given as boxes from elsewhere (another detector, a labelling tool), and the JSON form of detections.

A *boxes file* lets the pipeline skip MediaPipe. It is JSON in one of two shapes:

    [{"box_xyxy": [x0, y0, x1, y1], "side": "right", "score": 0.9}, ...]
        the hands of a single image (for a video: of every frame)

    {"frame_000.png": [<hand>, ...], "17": [<hand>, ...], "*": [<hand>, ...]}
        hands per image or per video frame. A key is the image's file name (as given on the command line, or its
        base name) or, for a video/bag, the frame index in decimal; "*" covers every frame not listed. A frame
        with no entry and no "*" has no hands.

Each hand: `box_xyxy` (required) the tight hand box in pixels of that image (HaMeR's ×2 crop expansion is applied
later, in hamer.preprocess.crop_box); `side` (required) the subject's own hand, 'left' or 'right'; `score` and
`side_score` (optional, default 1.0). Other keys are read when present (`landmarks_2d` 21x2 px, `landmarks_world`
21x3 m, `track_id`, `stage`: which search found the hand, default 'palm'; hands read from a boxes file count as
'external' whatever it says) and ignored otherwise, so the JSON that `python -m hamer_ros detect` writes is itself a valid
boxes file.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from hamer_ros.types import SIDES, STAGE_EXTERNAL, STAGE_PALM, STAGES, HandDetection

ALL_FRAMES_KEY = '*'
SideLike = Union[str, bool, np.bool_]


def detections_from_boxes(boxes, sides: Sequence[SideLike], scores: Optional[Sequence[float]] = None
                          ) -> List[HandDetection]:
    """`HandDetection`s from (N, 4) x0, y0, x1, y1 pixel boxes and N sides ('left'/'right', or True for right)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f'boxes must be an (N, 4) array of x0, y0, x1, y1 pixels, got shape {boxes.shape}')
    if len(sides) != len(boxes):
        raise ValueError(f'got {len(boxes)} boxes but {len(sides)} sides: give one side per box')
    if scores is not None and len(scores) != len(boxes):
        raise ValueError(f'got {len(boxes)} boxes but {len(scores)} scores: give one score per box, or none')
    detections = []
    for i, box in enumerate(boxes):
        _check_box(box, f'box {i}')
        detections.append(HandDetection(box_xyxy=box, side=_side_name(sides[i]),
                                        score=1.0 if scores is None else float(scores[i])))
    return detections


def detection_to_json(detection: HandDetection) -> dict:
    """A detection as plain JSON types (the `detect` command's output format, also a boxes-file entry)."""
    out = {'box_xyxy': [float(v) for v in detection.box_xyxy], 'side': detection.side,
           'side_score': float(detection.side_score), 'score': float(detection.score), 'stage': detection.stage}
    for key in ('landmarks_2d', 'landmarks_world'):
        value = getattr(detection, key)
        out[key] = None if value is None else np.asarray(value, dtype=float).tolist()
    if detection.track_id >= 0:
        out['track_id'] = int(detection.track_id)
    return out


def detection_from_json(entry: dict, where: str = 'hand') -> HandDetection:
    """Inverse of `detection_to_json`; `where` names the entry in error messages."""
    if not isinstance(entry, dict) or 'box_xyxy' not in entry or 'side' not in entry:
        raise ValueError(f'{where}: each hand needs "box_xyxy": [x0, y0, x1, y1] and "side": "left"|"right", '
                         f'got {entry!r:.200}')
    try:
        box = np.asarray(entry['box_xyxy'], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{where}: box_xyxy must be four numbers, got {entry["box_xyxy"]!r:.100}') from exc
    if box.shape != (4,):
        raise ValueError(f'{where}: box_xyxy must be four numbers x0, y0, x1, y1, got {entry["box_xyxy"]!r:.100}')
    _check_box(box, where)
    if entry['side'] not in SIDES:
        raise ValueError(f'{where}: side must be "left" or "right", got {entry["side"]!r}')
    stage = entry.get('stage', STAGE_PALM)
    if stage not in STAGES:
        raise ValueError(f'{where}: stage must be one of {", ".join(STAGES)}, got {stage!r}')
    landmarks = {}
    for key, shape in (('landmarks_2d', (21, 2)), ('landmarks_world', (21, 3))):
        if entry.get(key) is not None:
            landmarks[key] = np.asarray(entry[key], dtype=np.float64)
            if landmarks[key].shape != shape:
                raise ValueError(f'{where}: {key} must be {shape[0]}x{shape[1]}, got {landmarks[key].shape}')
    return HandDetection(box_xyxy=box, side=entry['side'], side_score=float(entry.get('side_score', 1.0)),
                         score=float(entry.get('score', 1.0)), track_id=int(entry.get('track_id', -1)), stage=stage,
                         **landmarks)


def load_boxes_file(path: Union[str, os.PathLike]) -> Dict[str, List[HandDetection]]:
    """Read a boxes file (module docstring) into {frame key: hands}; a plain list comes back under "*". The hands
    are marked as given from elsewhere (stage STAGE_EXTERNAL, as boxes on the node's hands/boxes_in)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f'boxes file {path} does not exist') from None
    except json.JSONDecodeError as exc:
        raise ValueError(f'boxes file {path} is not valid JSON ({exc})') from exc
    if isinstance(data, list):
        data = {ALL_FRAMES_KEY: data}
    if not isinstance(data, dict):
        raise ValueError(f'boxes file {path} must hold a list of hands or an object {{frame: [hands]}}; '
                         'see hamer_ros.detection.boxes for the format')
    table = {}
    for key, hands in data.items():
        if not isinstance(hands, list):
            raise ValueError(f'boxes file {path}, frame {key!r}: expected a list of hands, got {type(hands).__name__}')
        where = f'boxes file {path}, frame {key!r}, hand'
        table[str(key)] = [dataclasses.replace(detection_from_json(hand, f'{where} {i}'), stage=STAGE_EXTERNAL)
                           for i, hand in enumerate(hands)]
    return table


def boxes_for_frame(table: Dict[str, List[HandDetection]], key: Union[str, int, os.PathLike]
                    ) -> List[HandDetection]:
    """The hands a boxes table gives for one image (file name) or video frame (index); [] when none."""
    for candidate in (str(key), Path(str(key)).name, ALL_FRAMES_KEY):
        if candidate in table:
            return list(table[candidate])
    return []


def _side_name(side: SideLike) -> str:
    if isinstance(side, (bool, np.bool_)):
        return 'right' if side else 'left'
    if side not in SIDES:
        raise ValueError(f"side must be 'left', 'right' or a bool is_right, got {side!r}")
    return side


def _check_box(box: np.ndarray, where: str) -> None:
    if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f'{where}: box {box.tolist()} must be finite x0, y0, x1, y1 pixels with x1 > x0, y1 > y0')
