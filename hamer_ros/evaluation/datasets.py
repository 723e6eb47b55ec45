"""Readers for the hand benchmarks in their published layouts. Every sample comes out the same way: an image,
its intrinsics and its ground-truth hands in the camera's optical frame (REP-103: metres, x right, y down,
z forward), joints in OpenPose order (hamer_ros.hamer.mano.OPENPOSE_JOINT_NAMES: wrist, then thumb, index,
middle, ring, pinky from the palm out), MANO vertices where the dataset has them.

Layouts and conventions (the facts relied on):
- FreiHAND (Zimmermann et al., ICCV 2019; FreiHAND_pub_v2_eval): `evaluation/rgb/%08d.jpg`, `evaluation_K.json`
  (3x3 per sample), `evaluation_xyz.json` (21 joints, metres, camera frame, already OpenPose order),
  `evaluation_verts.json` (778 MANO vertices). Right hands only. The training split has the same files with
  `training` in place of `evaluation`, and four images per annotation (image i uses annotation i mod N).
- HO3D v2/v3 (Hampali et al., CVPR 2020): `evaluation.txt` lists `SEQ/FRAME`; `evaluation/SEQ/rgb/FRAME.png`
  (v2) or `.jpg` (v3); `evaluation/SEQ/meta/FRAME.pkl` holds `camMat` (3x3); `evaluation_xyz.json` and
  `evaluation_verts.json` follow the order of `evaluation.txt`. Coordinates are OpenGL's (y up, z backward): y
  and z are negated to reach the optical frame. Joints come in MANO order (wrist, index, middle, pinky, ring,
  thumb, 3 each, then the five tips thumb..pinky); `HO3D_TO_OPENPOSE` reorders them (as HO3D's and HaMeR's
  evaluation code do). Right hands only.
- InterHand2.6M (Moon et al., ECCV 2020): `annotations/SPLIT/InterHand2.6M_SPLIT_{data,camera,joint_3d}.json`,
  images `images/SPLIT/Capture{c}/{seq_name}/cam{camera}/image{frame}.jpg`. 42 joints in world millimetres:
  0-20 the right hand, 21-41 the left; per hand tip-to-base per finger (thumb4..thumb1, index, middle, ring,
  pinky), the wrist last (InterHand2.6M's skeleton.txt; mmpose's interhand3d dataset description lists the same).
  A world point X goes to the camera as R (X - campos), R = camrot (InterHand2.6M's world2cam).
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np

from hamer_ros.errors import InputError

DATASETS = ('freihand', 'ho3d', 'interhand')

HO3D_TO_OPENPOSE = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
# OpenPose joint i of an InterHand2.6M hand is its joint INTERHAND_TO_OPENPOSE[i] (add 21 for the left hand).
INTERHAND_TO_OPENPOSE = [20, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 19, 18, 17, 16]
_OPENGL_TO_OPTICAL = np.array([1.0, -1.0, -1.0])


@dataclass
class GroundTruthHand:
    side: str                              # 'left' | 'right'
    joints: np.ndarray                     # (21, 3) m, camera optical frame, OpenPose order
    valid: np.ndarray                      # (21,) bool: joints with ground truth
    box_xyxy: np.ndarray                   # (4,) px: tight box of the valid joints' projections
    vertices: Optional[np.ndarray] = None  # (778, 3) m, camera frame, MANO order


@dataclass
class Sample:
    key: str                               # unique within the dataset; a file name stem for records
    image_path: Path
    camera_matrix: np.ndarray              # (3, 3) K, px
    hands: List[GroundTruthHand] = field(default_factory=list)


class DatasetError(InputError):
    """A dataset folder that does not have the published layout (the message says what is missing)."""


def open_dataset(name: str, root, split: Optional[str] = None) -> 'Dataset':
    readers = {'freihand': FreiHAND, 'ho3d': HO3D, 'interhand': InterHand}
    if name not in readers:
        raise DatasetError(f'unknown dataset {name!r}: one of {", ".join(DATASETS)}')
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f'{name}: {root} is not a folder')
    return readers[name](root, split)


def projected_box(joints: np.ndarray, camera_matrix: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Tight box (x0, y0, x1, y1) of the valid joints projected through K."""
    points = np.asarray(joints, np.float64)[np.asarray(valid, bool)]
    uvw = points @ np.asarray(camera_matrix, np.float64).T
    uv = uvw[:, :2] / uvw[:, 2:3]
    return np.concatenate([uv.min(0), uv.max(0)])


def _hand(side, joints, valid, camera_matrix, vertices=None) -> GroundTruthHand:
    joints = np.asarray(joints, np.float64).reshape(21, 3)
    valid = np.asarray(valid, bool).reshape(21)
    return GroundTruthHand(side, joints, valid, projected_box(joints, camera_matrix, valid),
                           None if vertices is None else np.asarray(vertices, np.float64).reshape(-1, 3))


def _read_json(path: Path):
    if not path.exists():
        raise DatasetError(f'{path} not found: the dataset folder does not have the published layout '
                           '(docs/accuracy.md)')
    with open(path) as f:
        return json.load(f)


class Dataset:
    name = ''

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Sample]:
        return (self.sample(i) for i in range(len(self)))

    def sample(self, index: int) -> Sample:
        raise NotImplementedError


class FreiHAND(Dataset):
    name = 'freihand'

    def __init__(self, root: Path, split: Optional[str] = None):
        self.root, self.split = root, split or 'evaluation'
        if self.split not in ('evaluation', 'training'):
            raise DatasetError(f"freihand: split must be 'evaluation' or 'training', got {self.split!r}")
        self.K = _read_json(root / f'{self.split}_K.json')
        self.xyz = _read_json(root / f'{self.split}_xyz.json')
        verts = root / f'{self.split}_verts.json'
        self.verts = _read_json(verts) if verts.exists() else None
        self.images = sorted((root / self.split / 'rgb').glob('*.jpg'))
        if not self.images:
            raise DatasetError(f'freihand: no images in {root / self.split / "rgb"}')
        if len(self.K) != len(self.xyz) or (self.verts is not None and len(self.verts) != len(self.xyz)):
            raise DatasetError(f'freihand: {self.split}_K/xyz/verts.json have different lengths')

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, index: int) -> Sample:
        path = self.images[index]
        annotation = int(path.stem) % len(self.xyz)
        K = np.asarray(self.K[annotation], np.float64)
        vertices = None if self.verts is None else self.verts[annotation]
        return Sample(path.stem, path, K, [_hand('right', self.xyz[annotation], np.ones(21, bool), K, vertices)])


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """HO3D's meta files are pickled dicts of numpy arrays: nothing else may be built (no code runs)."""

    def find_class(self, module, name):
        if module.split('.')[0] == 'numpy' and name in ('_reconstruct', 'ndarray', 'dtype', 'scalar'):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'refused global {module}.{name} (only numpy arrays are read)')


def _read_meta(path: Path) -> dict:
    try:
        with open(path, 'rb') as f:
            meta = _NumpyOnlyUnpickler(f, encoding='latin1').load()
    except FileNotFoundError:
        raise DatasetError(f'{path} not found (HO3D meta file)') from None
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DatasetError(f'{path}: not a readable HO3D meta file ({exc})') from None
    if not isinstance(meta, dict) or meta.get('camMat') is None:
        raise DatasetError(f'{path}: no camMat in the HO3D meta file')
    return meta


class HO3D(Dataset):
    name = 'ho3d'

    def __init__(self, root: Path, split: Optional[str] = None):
        self.root, self.split = root, split or 'evaluation'
        listing = root / f'{self.split}.txt'
        if not listing.exists():
            raise DatasetError(f'{listing} not found: the HO3D folder does not have the published layout')
        self.ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        self.xyz = _read_json(root / f'{self.split}_xyz.json')
        verts = root / f'{self.split}_verts.json'
        self.verts = _read_json(verts) if verts.exists() else None
        if len(self.xyz) != len(self.ids) or (self.verts is not None and len(self.verts) != len(self.ids)):
            raise DatasetError(f'ho3d: {self.split}.txt and {self.split}_xyz/verts.json have different lengths')

    def __len__(self) -> int:
        return len(self.ids)

    def sample(self, index: int) -> Sample:
        sequence, frame = self.ids[index].split('/')
        folder = self.root / self.split / sequence
        image = next((p for p in (folder / 'rgb' / f'{frame}.png', folder / 'rgb' / f'{frame}.jpg') if p.exists()),
                     folder / 'rgb' / f'{frame}.png')
        K = np.asarray(_read_meta(folder / 'meta' / f'{frame}.pkl')['camMat'], np.float64).reshape(3, 3)
        joints = np.asarray(self.xyz[index], np.float64).reshape(21, 3)[HO3D_TO_OPENPOSE] * _OPENGL_TO_OPTICAL
        vertices = None
        if self.verts is not None:
            vertices = np.asarray(self.verts[index], np.float64).reshape(-1, 3) * _OPENGL_TO_OPTICAL
        return Sample(f'{sequence}_{frame}', image, K, [_hand('right', joints, np.ones(21, bool), K, vertices)])


class InterHand(Dataset):
    name = 'interhand'

    def __init__(self, root: Path, split: Optional[str] = None):
        self.root, self.split = root, split or 'test'
        prefix = root / 'annotations' / self.split / f'InterHand2.6M_{self.split}'
        data = _read_json(Path(f'{prefix}_data.json'))
        self.cameras = _read_json(Path(f'{prefix}_camera.json'))
        self.joints = _read_json(Path(f'{prefix}_joint_3d.json'))
        self.images = data['images']
        self.annotations = {a['image_id']: a for a in data['annotations']}

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, index: int) -> Sample:
        image = self.images[index]
        capture, camera, frame = str(image['capture']), str(image['camera']), str(image['frame_idx'])
        cam = self.cameras[capture]
        rotation = np.asarray(cam['camrot'][camera], np.float64).reshape(3, 3)
        position = np.asarray(cam['campos'][camera], np.float64).reshape(3)
        focal, centre = cam['focal'][camera], cam['princpt'][camera]
        K = np.array([[focal[0], 0.0, centre[0]], [0.0, focal[1], centre[1]], [0.0, 0.0, 1.0]])
        entry = self.joints[capture][frame]
        world = np.asarray(entry['world_coord'], np.float64).reshape(42, 3)
        camera_m = (world - position) @ rotation.T / 1000.0
        valid = np.asarray(self.annotations.get(image['id'], entry)['joint_valid'], np.float64).reshape(42) > 0
        hands = []
        for side, offset in (('right', 0), ('left', 21)):
            order = np.asarray(INTERHAND_TO_OPENPOSE) + offset
            if valid[order].sum() >= 4 and np.all(camera_m[order][valid[order], 2] > 0):
                hands.append(_hand(side, camera_m[order], valid[order], K))
        path = (self.root / 'images' / self.split / f'Capture{capture}' / image['seq_name'] / f'cam{camera}'
                / image['file_name'])
        return Sample(f'{Path(image["file_name"]).stem}_cam{camera}', path, K, hands)
