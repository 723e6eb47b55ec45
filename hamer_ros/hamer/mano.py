"""MANO for HaMeR inference: loading the model safely and evaluating it with smplx's skinning.

The model can come from two places (docs/model.md §1.1, §4):

* the checkpoint's own ``mano.*`` buffers (`mano_from_state_dict`) — they override the pkl in the official
  code, so with them MANO_RIGHT.pkl is not needed at all;
* ``MANO_RIGHT.pkl`` (`load_mano_pkl`), a Python-2 pickle whose arrays are partly chumpy objects. It is read
  with a restricted unpickler: only numpy arrays, scipy sparse matrices and chumpy placeholders can be built,
  nothing is imported or called beyond that, and chumpy itself is not needed.

`ManoLayer` runs smplx's ``lbs`` exactly as HaMeR's MANO wrapper does (float32, rotation matrices, no mean
pose, no translation) and adds the 21 OpenPose-order keypoints and the global joint rotations.
"""
from __future__ import annotations

import copyreg
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Union

import numpy as np
import scipy.sparse
import torch
from smplx.lbs import batch_rigid_transform, lbs

from hamer_ros.errors import UserError
from hamer_ros.hamer.untrusted import printable, short_repr
from hamer_ros.hamer.topology import (  # noqa: F401 (re-exported: the MANO topology lives there)
    NUM_VERTICES, NUM_FACES, NUM_JOINTS, NUM_BETAS, NUM_POSE_BASIS,
    MANO_JOINT_NAMES, MANO_PARENTS, FINGERTIP_VERTEX_IDS, JOINT_MAP, OPENPOSE_JOINT_NAMES,
    OPENPOSE_PARENTS, OPENPOSE_TO_MANO_JOINT, WRIST_CAP_FACES, closed_faces, faces_for_side,
)

# M R M with M = diag(-1, 1, 1) flips the sign of the entries that mix x with y or z.
_MIRROR_SIGNS = np.outer([-1.0, 1.0, 1.0], [-1.0, 1.0, 1.0])


class MANOFileError(UserError, ValueError):
    """A MANO file or checkpoint that cannot be used; the message names the file and the key."""


@dataclass
class ManoData:
    """The MANO arrays HaMeR needs, in smplx's buffer layout (float32 / int64)."""
    v_template: np.ndarray    # (778, 3) m
    shapedirs: np.ndarray     # (778, 3, 10)
    posedirs: np.ndarray      # (135, 2334): pkl posedirs (778, 3, 135) reshaped to (2334, 135), transposed
    J_regressor: np.ndarray   # (16, 778) dense
    parents: np.ndarray       # (16,) int64, root -1
    lbs_weights: np.ndarray   # (778, 16)
    faces: np.ndarray         # (1538, 3) int64, right-hand winding
    source: str               # where it was read from (for messages)


_EXPECTED_SHAPES = {
    'v_template': (NUM_VERTICES, 3),
    'shapedirs': (NUM_VERTICES, 3, NUM_BETAS),
    'posedirs': (NUM_POSE_BASIS, NUM_VERTICES * 3),
    'J_regressor': (NUM_JOINTS, NUM_VERTICES),
    'parents': (NUM_JOINTS,),
    'lbs_weights': (NUM_VERTICES, NUM_JOINTS),
    'faces': (NUM_FACES, 3),
}


_INTEGER_FIELDS = ('parents', 'faces')


def _check_numeric(value: np.ndarray, source: str, key: str, integer: bool = False) -> None:
    """Numbers only (no strings, objects, or booleans), integers where indices are expected."""
    kinds = 'iu' if integer else 'iuf'
    if value.dtype.kind not in kinds:
        expected = 'integers' if integer else 'numbers'
        raise MANOFileError(f'{source}: {key!r} holds {value.dtype} values, expected {expected}; the file is damaged '
                            'or not a MANO model (use the original MANO_RIGHT.pkl)')


def _make_mano_data(arrays: Mapping[str, np.ndarray], source: str, key_names: Mapping[str, str]) -> ManoData:
    """Checks dtypes, shapes, finiteness and topology, casts to the smplx dtypes; errors name the file and key."""
    checked = {}
    for field, shape in _EXPECTED_SHAPES.items():
        value = arrays[field]
        _check_numeric(value, source, key_names[field], integer=field in _INTEGER_FIELDS)
        if value.shape != shape:
            raise MANOFileError(f'{source}: {key_names[field]!r} has shape {value.shape}, expected {shape} '
                                '(is this the right-hand MANO model, MANO_RIGHT.pkl?)')
        if field in _INTEGER_FIELDS:
            checked[field] = np.ascontiguousarray(value, dtype=np.int64)
            continue
        if not np.all(np.isfinite(value)):
            raise MANOFileError(f'{source}: {key_names[field]!r} holds non-finite values (NaN or inf); the file is '
                                'damaged: download it again')
        with np.errstate(over='ignore'):   # reported below, naming the key
            checked[field] = np.ascontiguousarray(value, dtype=np.float32)
        if not np.all(np.isfinite(checked[field])):
            raise MANOFileError(f'{source}: {key_names[field]!r} holds values beyond float32 range; the file is '
                                'damaged: download it again')
    if tuple(checked['parents']) != MANO_PARENTS:
        raise MANOFileError(f'{source}: {key_names["parents"]!r} is {checked["parents"].tolist()}, expected the MANO '
                            f'kinematic tree {list(MANO_PARENTS)}')
    faces = checked['faces']
    if faces.min() < 0 or faces.max() >= NUM_VERTICES:
        raise MANOFileError(f'{source}: {key_names["faces"]!r} indexes vertices outside 0..{NUM_VERTICES - 1}')
    return ManoData(source=source, **checked)


# ----------------------------------------------------------------------------------------------- pkl loading


class _PickledChumpy:
    """Stands in for any chumpy class: keeps the pickled state, whose ``x`` is the array value."""
    chumpy_class = 'chumpy'

    def __init__(self, *args, **kwargs):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _PickledSparse:
    """Stands in for scipy's csc/csr classes, whose module paths and attributes changed across versions."""
    sparse_format = 'csc'

    def __setstate__(self, state):
        self.state = state

    def to_scipy(self, where: str, max_elements: int):
        """The matrix, checked: numeric arrays, a shape of at most `max_elements` (it is densified next), index
        arrays consistent with the shape (scipy's full format check)."""
        state = self.state if isinstance(self.state, dict) else {}
        shape = state.get('_shape', state.get('shape'))
        if shape is None or not all(k in state for k in ('data', 'indices', 'indptr')):
            raise MANOFileError(f'{where}: sparse matrix without data/indices/indptr/shape in its pickled state')
        arrays = [state[k] for k in ('data', 'indices', 'indptr')]
        if not all(isinstance(a, np.ndarray) and a.dtype.kind in 'iuf' for a in arrays) or \
                arrays[1].dtype.kind == 'f' or arrays[2].dtype.kind == 'f':
            raise MANOFileError(f'{where}: sparse matrix whose data/indices/indptr are not numeric arrays')
        if not (isinstance(shape, tuple) and len(shape) == 2 and all(type(n) is int and n >= 0 for n in shape)
                and shape[0] * shape[1] <= max_elements):
            raise MANOFileError(f'{where}: sparse matrix of shape {short_repr(shape)}, expected at most '
                                f'{max_elements} elements')
        matrix_class = scipy.sparse.csc_matrix if self.sparse_format == 'csc' else scipy.sparse.csr_matrix
        try:
            matrix = matrix_class(tuple(arrays), shape=shape)
            matrix.check_format(full_check=True)
        except (ValueError, TypeError, IndexError) as exc:
            raise MANOFileError(f'{where}: inconsistent sparse matrix ({printable(str(exc))}); the file is '
                                'damaged: download MANO_RIGHT.pkl again') from None
        return matrix


class _PickledCsc(_PickledSparse):
    sparse_format = 'csc'


class _PickledCsr(_PickledSparse):
    sparse_format = 'csr'


def _latin1_encode(text, encoding='latin1'):
    # Python 3 pickles of bytes call _codecs.encode(str, 'latin1'); allow exactly that and nothing else.
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise ValueError(f'unexpected _codecs.encode({type(text).__name__}, {encoding!r}) in the pickle')
    return text.encode('latin1')


def _allowed_globals() -> Dict[tuple, Callable]:
    # numpy moved its pickling helpers from numpy.core to numpy._core (2.0); take them from numpy itself.
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    allowed = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype,
               ('_codecs', 'encode'): _latin1_encode}
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        allowed[(module, '_reconstruct')] = reconstruct
        allowed[(module, 'scalar')] = scalar
    # Protocol 0/1 pickles rebuild objects through copyreg._reconstructor(cls, object, state); cls still
    # has to pass this list, so this cannot reach anything else.
    for module in ('copy_reg', 'copyreg'):
        allowed[(module, '_reconstructor')] = copyreg._reconstructor
    for module in ('__builtin__', 'builtins'):
        allowed[(module, 'object')] = object
    for fmt, stub in (('csc', _PickledCsc), ('csr', _PickledCsr)):
        for module in (f'scipy.sparse.{fmt}', f'scipy.sparse._{fmt}'):
            allowed[(module, f'{fmt}_matrix')] = stub
    return allowed


class _MANOUnpickler(pickle.Unpickler):
    """Builds only numpy arrays, scipy sparse matrices and chumpy placeholders; refuses every other global."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding='latin1')   # Python-2 pickle (docs/model.md §4)
        self._source = source
        self._allowed = _allowed_globals()

    def find_class(self, module, name):
        if module == 'chumpy' or module.startswith('chumpy.'):
            return type('Chumpy', (_PickledChumpy,), {'chumpy_class': printable(f'{module}.{name}')})
        found = self._allowed.get((module, name))
        if found is None:
            raise MANOFileError(f'{self._source}: refused to load the global {printable(f"{module}.{name}")} from this '
                                'pickle: a MANO file holds only numpy arrays, scipy sparse matrices and chumpy arrays, '
                                'and loading never runs code. Use the original MANO_RIGHT.pkl from the MANO website.')
        return found


def _to_array(value, source: str, key: str) -> np.ndarray:
    if isinstance(value, _PickledChumpy):
        state = value.state if isinstance(value.state, dict) else {}
        if 'x' not in state:
            raise MANOFileError(f'{source}: {key!r} is a {value.chumpy_class} object without a stored value (x); '
                                'only plain chumpy arrays (Ch) can be read without chumpy')
        value = state['x']
    if isinstance(value, _PickledSparse):
        value = value.to_scipy(f'{source}: {key!r}', max_elements=_MAX_ELEMENTS).toarray()
    if not isinstance(value, np.ndarray):
        raise MANOFileError(f'{source}: {key!r} is a {type(value).__name__}, expected an array')
    _check_numeric(value, source, key)
    if value.size > _MAX_ELEMENTS:
        raise MANOFileError(f'{source}: {key!r} has {value.size} elements, far more than a MANO model\'s')
    return value


# The largest MANO array: posedirs, 778 x 3 x 135 = 315 090 numbers.
_MAX_ELEMENTS = 4 * NUM_VERTICES * 3 * NUM_POSE_BASIS


# smplx's attribute <- key in MANO_RIGHT.pkl
_PKL_KEYS = {'v_template': 'v_template', 'shapedirs': 'shapedirs', 'posedirs': 'posedirs',
             'J_regressor': 'J_regressor', 'parents': 'kintree_table', 'lbs_weights': 'weights', 'faces': 'f'}


def load_mano_pkl(path: Union[str, Path]) -> ManoData:
    """Reads MANO_RIGHT.pkl (a folder holding it works too) without chumpy and without running code."""
    path = Path(path)
    if path.is_dir():
        path = path / 'MANO_RIGHT.pkl'
    if not path.is_file():
        raise FileNotFoundError(f'{path}: MANO model not found. Download MANO_RIGHT.pkl from the MANO website '
                                '(mano.is.tue.mpg.de) into <data_dir>/data/mano/, or use a checkpoint that '
                                'carries the mano.* buffers.')
    source = str(path)
    try:
        with open(path, 'rb') as file:
            content = _MANOUnpickler(file, source).load()
    except MANOFileError:
        raise
    except Exception as exc:   # truncated or not a pickle at all: say which file
        raise MANOFileError(f'{source}: cannot read this file as a MANO pickle ({type(exc).__name__}: '
                            f'{printable(str(exc).splitlines()[0] if str(exc) else "")}); '
                            'download MANO_RIGHT.pkl again') from exc
    if not isinstance(content, dict):
        raise MANOFileError(f'{source}: expected a dict of MANO arrays, found a {type(content).__name__}')
    arrays = {}
    for field, key in _PKL_KEYS.items():
        if key not in content:
            raise MANOFileError(f'{source}: key {key!r} missing; this is not a MANO model file')
        arrays[field] = _to_array(content[key], source, key)
    # Same conversions as smplx 0.1.28 (body_models.py L250-256): first 10 shape components,
    # posedirs (778,3,135) -> (135, 2334), parents from the kinematic tree with the root set to -1.
    shapedirs = arrays['shapedirs']
    if shapedirs.ndim == 3 and shapedirs.shape[2] > NUM_BETAS:
        arrays['shapedirs'] = shapedirs[:, :, :NUM_BETAS]
    posedirs = arrays['posedirs']
    if posedirs.ndim != 3:
        raise MANOFileError(f'{source}: \'posedirs\' has shape {posedirs.shape}, expected '
                            f'{(NUM_VERTICES, 3, NUM_POSE_BASIS)}')
    arrays['posedirs'] = np.reshape(posedirs, (-1, posedirs.shape[-1])).T
    kintree = arrays['parents']
    if kintree.ndim != 2 or kintree.shape[0] != 2:
        raise MANOFileError(f'{source}: \'kintree_table\' has shape {kintree.shape}, expected (2, {NUM_JOINTS})')
    _check_numeric(kintree, source, 'kintree_table', integer=True)
    parents = kintree[0].astype(np.int64)
    parents[0] = -1
    arrays['parents'] = parents
    return _make_mano_data(arrays, source, _PKL_KEYS)


# ------------------------------------------------------------------------------------------- checkpoint buffers

_STATE_DICT_KEYS = {'v_template': 'mano.v_template', 'shapedirs': 'mano.shapedirs', 'posedirs': 'mano.posedirs',
                    'J_regressor': 'mano.J_regressor', 'parents': 'mano.parents',
                    'lbs_weights': 'mano.lbs_weights', 'faces': 'mano.faces_tensor'}
# Constants HaMeR also stores; when present they must agree with ours (docs/model.md §1.1).
_STATE_DICT_CONSTANTS = {'mano.extra_joints_idxs': FINGERTIP_VERTEX_IDS, 'mano.joint_map': JOINT_MAP}


def mano_from_state_dict(state_dict: Mapping, source: str = 'checkpoint') -> Optional[ManoData]:
    """MANO from the checkpoint's ``mano.*`` buffers; None when the checkpoint carries none."""
    if not any(key in state_dict for key in _STATE_DICT_KEYS.values()):
        return None
    arrays = {}
    for field, key in _STATE_DICT_KEYS.items():
        if key not in state_dict:
            raise MANOFileError(f'{source}: key {key!r} missing while other mano.* buffers are present; '
                                'the checkpoint is incomplete (or pass a MANO_RIGHT.pkl)')
        arrays[field] = _numpy(state_dict[key])
    for key, expected in _STATE_DICT_CONSTANTS.items():
        if key in state_dict and tuple(_numpy(state_dict[key]).tolist()) != expected:
            raise MANOFileError(f'{source}: {key!r} is {_numpy(state_dict[key]).tolist()}, expected {list(expected)}')
    return _make_mano_data(arrays, source, _STATE_DICT_KEYS)


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


# ---------------------------------------------------------------------------------------------------- the layer

class ManoLayer(torch.nn.Module):
    """HaMeR's MANO (``mano_wrapper.MANO`` over smplx ``MANOLayer``) evaluated with smplx's ``lbs``."""

    def __init__(self, mano: ManoData):
        super().__init__()
        for name in ('v_template', 'shapedirs', 'posedirs', 'J_regressor', 'lbs_weights', 'parents'):
            self.register_buffer(name, torch.tensor(getattr(mano, name)))
        # Derived constants: not part of a state dict.
        self.register_buffer('fingertip_ids', torch.tensor(FINGERTIP_VERTEX_IDS, dtype=torch.int64),
                             persistent=False)
        self.register_buffer('joint_map', torch.tensor(JOINT_MAP, dtype=torch.int64), persistent=False)
        # The rotations of the kinematic chain do not depend on where the joints are, so the template's rest
        # joints serve to read them out of smplx's batch_rigid_transform.
        self.register_buffer('template_joints', self.J_regressor @ self.v_template, persistent=False)

    def forward(self, global_orient: torch.Tensor, hand_pose: torch.Tensor,
                betas: torch.Tensor) -> Dict[str, torch.Tensor]:
        """global_orient (B,3,3) or (B,1,3,3), hand_pose (B,15,3,3), betas (B,10) ->
        ``vertices`` (B,778,3) m, ``keypoints_3d`` (B,21,3) m in OpenPose order, ``joint_rotations`` (B,16,3,3)
        global rotation of each MANO joint. Hand-centred (no translation), in the frame of the rotations."""
        batch = betas.shape[0]
        dtype = self.v_template.dtype
        full_pose = torch.cat([global_orient.reshape(batch, 1, 3, 3).to(dtype),
                               hand_pose.reshape(batch, NUM_JOINTS - 1, 3, 3).to(dtype)], dim=1)
        # MANO always runs in float32 as in the official model (docs/model.md §4), also under a caller's autocast.
        with torch.autocast(device_type=self.v_template.device.type, enabled=False):
            vertices, joints = lbs(betas.to(dtype), full_pose, self.v_template, self.shapedirs, self.posedirs,
                                   self.J_regressor, self.parents, self.lbs_weights, pose2rot=False)
            tips = torch.index_select(vertices, 1, self.fingertip_ids)
            keypoints = torch.cat([joints, tips], dim=1)[:, self.joint_map]
            _, transforms = batch_rigid_transform(full_pose, self.template_joints.expand(batch, -1, -1),
                                                  self.parents, dtype=dtype)
        return {'vertices': vertices, 'keypoints_3d': keypoints, 'joint_rotations': transforms[:, :, :3, :3]}


# ------------------------------------------------------------------------------------------ faces and mirroring

def mirror_rotations(rotations):
    """``M R M`` with ``M = diag(-1, 1, 1)`` (numpy or torch, (..., 3, 3)): a rotation of the mirrored
    (right-hand) crop frame expressed in the image frame of a left hand (docs/model.md §7)."""
    if isinstance(rotations, torch.Tensor):
        return rotations * torch.as_tensor(_MIRROR_SIGNS, dtype=rotations.dtype, device=rotations.device)
    rotations = np.asarray(rotations)
    return rotations * _MIRROR_SIGNS.astype(rotations.dtype)
