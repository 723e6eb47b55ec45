"""MANO: official outputs, pkl vs checkpoint buffers, chumpy-free and code-free loading, wrist cap, left hands."""
from __future__ import annotations

import pickle
import re
import shutil
import struct
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from hamer_ros.hamer import mano as mano_module
from hamer_ros.hamer.mano import (JOINT_MAP, MANO_JOINT_NAMES, MANO_PARENTS, OPENPOSE_JOINT_NAMES, OPENPOSE_PARENTS,
                                  OPENPOSE_TO_MANO_JOINT, ManoLayer, closed_faces, faces_for_side, load_mano_pkl,
                                  mano_from_state_dict, mirror_rotations)

MIRROR = np.diag([-1.0, 1.0, 1.0])
FIELDS = ('v_template', 'shapedirs', 'posedirs', 'J_regressor', 'parents', 'lbs_weights', 'faces')


@pytest.fixture(scope='module')
def mano_pkl(mano_only_data_dir):
    return mano_only_data_dir / 'data' / 'mano' / 'MANO_RIGHT.pkl'


@pytest.fixture(scope='module')
def mano(mano_pkl):
    return load_mano_pkl(mano_pkl)


@pytest.fixture(scope='module')
def generator():
    """The fixture generator (its make_mano / mano_buffers)."""
    import fixture_weights
    return fixture_weights


@pytest.fixture(scope='module')
def seed1_mano_dict(generator):
    return generator.make_mano(1)[0]


def run_layer(mano, global_orient, hand_pose, betas):
    with torch.no_grad():
        out = ManoLayer(mano)(torch.as_tensor(global_orient), torch.as_tensor(hand_pose), torch.as_tensor(betas))
    return {k: v.numpy() for k, v in out.items()}


def assert_same_mano(a, b):
    for field in FIELDS:
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.shape == y.shape, field
        np.testing.assert_array_equal(x, y, err_msg=field)


# --------------------------------------------------------------------------------------------- official numbers

def test_layer_reproduces_official_vertices_and_keypoints(mano, public_case):
    out = run_layer(mano, public_case['global_orient'], public_case['hand_pose'], public_case['betas'])
    assert out['vertices'].dtype == np.float32 and out['vertices'].shape == (1, 778, 3)
    np.testing.assert_allclose(out['vertices'], public_case['pred_vertices'], rtol=0, atol=2e-6)
    np.testing.assert_allclose(out['keypoints_3d'], public_case['pred_keypoints_3d'], rtol=0, atol=2e-6)
    # (B,3,3) global orientation (the agreed interface) and HaMeR's (B,1,3,3) give the same mesh.
    flat = run_layer(mano, public_case['global_orient'][:, 0], public_case['hand_pose'], public_case['betas'])
    np.testing.assert_array_equal(flat['vertices'], out['vertices'])


def test_batch_items_are_independent(mano, public_case):
    rng = np.random.default_rng(0)
    other_pose = public_case['hand_pose'] @ _random_rotations(rng, 15)[None].astype(np.float32)
    batch = run_layer(mano, np.concatenate([public_case['global_orient']] * 2),
                      np.concatenate([public_case['hand_pose'], other_pose]),
                      np.concatenate([public_case['betas'], public_case['betas'] * 0.5]))
    single = run_layer(mano, public_case['global_orient'], public_case['hand_pose'], public_case['betas'])
    np.testing.assert_allclose(batch['vertices'][:1], single['vertices'], rtol=0, atol=1e-6)
    assert np.abs(batch['vertices'][1] - batch['vertices'][0]).max() > 1e-3


# ----------------------------------------------------------------------------------- joints, rotations, names

def test_joint_tables_are_consistent():
    assert len(MANO_JOINT_NAMES) == 16 and len(OPENPOSE_JOINT_NAMES) == 21 and len(OPENPOSE_PARENTS) == 21
    assert OPENPOSE_JOINT_NAMES[:5] == ('wrist', 'thumb_cmc', 'thumb_mcp', 'thumb_ip', 'thumb_tip')
    assert OPENPOSE_JOINT_NAMES[17:] == ('pinky_mcp', 'pinky_pip', 'pinky_dip', 'pinky_tip')
    for openpose_index, source in enumerate(JOINT_MAP):
        if source < 16:   # a MANO joint keeps its name and frames itself
            assert MANO_JOINT_NAMES[source] == OPENPOSE_JOINT_NAMES[openpose_index]
            assert OPENPOSE_TO_MANO_JOINT[openpose_index] == source
        else:             # a tip is framed by its parent joint
            assert OPENPOSE_JOINT_NAMES[openpose_index].endswith('_tip')
            assert OPENPOSE_TO_MANO_JOINT[openpose_index] == JOINT_MAP[OPENPOSE_PARENTS[openpose_index]]
    # The OpenPose tree is the MANO tree relabelled, plus the tips.
    openpose_of_mano = {source: i for i, source in enumerate(JOINT_MAP)}
    for joint in range(1, 16):
        assert OPENPOSE_PARENTS[openpose_of_mano[joint]] == openpose_of_mano[MANO_PARENTS[joint]]


def _rest_joints(mano, betas):
    shaped = mano.v_template.astype(np.float64) + mano.shapedirs.astype(np.float64) @ betas.astype(np.float64)
    return mano.J_regressor.astype(np.float64) @ shaped


def test_joint_rotations_are_the_kinematic_chain(mano, public_case):
    out = run_layer(mano, public_case['global_orient'], public_case['hand_pose'], public_case['betas'])
    rotations = out['joint_rotations'][0].astype(np.float64)
    local = np.concatenate([public_case['global_orient'][0], public_case['hand_pose'][0]]).astype(np.float64)
    np.testing.assert_allclose(rotations[0], local[0], atol=1e-6)
    for joint in range(1, 16):
        np.testing.assert_allclose(rotations[joint], rotations[MANO_PARENTS[joint]] @ local[joint], atol=1e-6)
    # Each bone of the posed hand is its rest bone turned by the parent's global rotation.
    rest = _rest_joints(mano, public_case['betas'][0])
    posed = out['keypoints_3d'][0].astype(np.float64)[[JOINT_MAP.index(j) for j in range(16)]]
    for joint in range(1, 16):
        parent = MANO_PARENTS[joint]
        np.testing.assert_allclose(posed[joint] - posed[parent], rotations[parent] @ (rest[joint] - rest[parent]),
                                   atol=2e-6)


def test_left_hand_mirroring_is_consistent(mano, public_case):
    """A left hand is the mirrored right-hand result: x-negated points, M R M rotations, reversed winding."""
    out = run_layer(mano, public_case['global_orient'], public_case['hand_pose'], public_case['betas'])
    rotations = out['joint_rotations'][0].astype(np.float64)
    left_rotations = mirror_rotations(rotations)
    np.testing.assert_allclose(left_rotations, MIRROR @ rotations @ MIRROR, atol=0)
    np.testing.assert_allclose(np.linalg.det(left_rotations), 1.0, atol=1e-5)   # still proper rotations
    np.testing.assert_array_equal(mirror_rotations(left_rotations), rotations)
    torch_version = mirror_rotations(torch.from_numpy(rotations)).numpy()
    np.testing.assert_array_equal(torch_version, left_rotations)

    # The left hand's frames move its (mirrored) rest bones onto its (mirrored) posed bones.
    rest = _rest_joints(mano, public_case['betas'][0]) @ MIRROR
    posed = out['keypoints_3d'][0].astype(np.float64)[[JOINT_MAP.index(j) for j in range(16)]] @ MIRROR
    for joint in range(1, 16):
        parent = MANO_PARENTS[joint]
        np.testing.assert_allclose(posed[joint] - posed[parent],
                                   left_rotations[parent] @ (rest[joint] - rest[parent]), atol=2e-6)

    # Reversed winding keeps the mirrored mesh's normals pointing outwards (mirror images of the right ones).
    vertices = out['vertices'][0].astype(np.float64)
    right_normals = _face_normals(vertices, mano.faces)
    left_normals = _face_normals(vertices @ MIRROR, faces_for_side(mano.faces, is_right=False))
    np.testing.assert_allclose(left_normals, right_normals @ MIRROR, atol=1e-12)
    np.testing.assert_array_equal(faces_for_side(mano.faces, is_right=True), mano.faces)
    kept_winding = _face_normals(vertices @ MIRROR, mano.faces)
    np.testing.assert_allclose(kept_winding, -(right_normals @ MIRROR), atol=1e-12)


def _face_normals(vertices, faces):
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return np.cross(b - a, c - a)


def _random_rotations(rng, n):
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    return q * np.sign(np.linalg.det(q))[:, None, None]


# ---------------------------------------------------------------------------------------------------- wrist cap

def _boundary_cycle(faces):
    """The directed edges used once (a hole's rim) as one ordered cycle of vertices."""
    directed = {(int(f[k]), int(f[(k + 1) % 3])) for f in faces for k in range(3)}
    rim = {a: b for a, b in directed if (b, a) not in directed}
    start = next(iter(rim))
    cycle = [start]
    while rim[cycle[-1]] != start:
        cycle.append(rim[cycle[-1]])
    assert len(cycle) == len(rim), 'more than one hole'
    return cycle


def test_closed_faces_make_the_mesh_watertight(mano):
    closed = closed_faces(mano.faces)
    assert closed.shape == (1552, 3) and closed.dtype == np.int64
    np.testing.assert_array_equal(closed[:1538], mano.faces)
    cap = closed[1538:]
    # The synthetic MANO has its 16-vertex wrist rim elsewhere: relabel its vertices so that the rim sits where
    # the real MANO has it, then the official cap must close the mesh with consistent winding.
    hole = _boundary_cycle(mano.faces)
    cap_rim = _boundary_cycle(cap)[::-1]   # the cap's rim walked the way the hole's must be
    assert len(hole) == len(cap_rim) == 16
    new_label = np.arange(778)
    new_label[hole] = cap_rim
    freed = sorted(set(hole) - set(cap_rim))
    displaced = sorted(set(cap_rim) - set(hole))
    new_label[displaced] = freed
    assert len(set(new_label.tolist())) == 778
    watertight = closed_faces(new_label[mano.faces])
    directed = [(int(f[k]), int(f[(k + 1) % 3])) for f in watertight for k in range(3)]
    assert len(set(directed)) == len(directed), 'a directed edge is used twice: inconsistent winding'
    assert all((b, a) in set(directed) for a, b in directed), 'an edge is used once: the mesh is not closed'
    edges = len(directed) // 2
    assert 778 - edges + len(watertight) == 2   # Euler characteristic of a sphere
    assert len(_boundary_cycle(new_label[mano.faces])) == 16   # without the cap it is open


def test_wrist_cap_is_the_official_one(mano):
    # The 14 triangles the official renderer appends, as listed in hamer/utils/renderer.py L150-164 (docs/model.md §4).
    official = [[92, 38, 234], [234, 38, 239], [38, 122, 239], [239, 122, 279], [122, 118, 279], [279, 118, 215],
                [118, 117, 215], [215, 117, 214], [117, 119, 214], [214, 119, 121], [119, 120, 121],
                [121, 120, 78], [120, 108, 78], [78, 108, 79]]
    np.testing.assert_array_equal(closed_faces(mano.faces)[1538:], official)
    # Left hands: the renderer's faces[:, [0, 2, 1]] of the closed mesh.
    left = faces_for_side(closed_faces(mano.faces), is_right=False)
    np.testing.assert_array_equal(left[1538:], np.array(official)[:, [0, 2, 1]])


def test_closed_faces_rejects_non_mano_faces():
    with pytest.raises(ValueError, match='MANO faces'):
        closed_faces(np.zeros((10, 4), dtype=np.int64))


# ------------------------------------------------------------------------------------- pkl vs checkpoint buffers

def test_state_dict_buffers_equal_the_pkl(mano, generator, seed1_mano_dict):
    buffers = generator.mano_buffers(seed1_mano_dict)   # what smplx registers, as in the checkpoint
    from_checkpoint = mano_from_state_dict(buffers, source='seed-1 buffers')
    assert from_checkpoint.source == 'seed-1 buffers'
    assert_same_mano(from_checkpoint, mano)
    numpy_buffers = {k: v.numpy() for k, v in buffers.items()}
    assert_same_mano(mano_from_state_dict(numpy_buffers), mano)


def test_state_dict_without_mano_gives_none_and_partial_is_refused(generator, seed1_mano_dict):
    assert mano_from_state_dict({'backbone.pos_embed': torch.zeros(1)}) is None
    buffers = generator.mano_buffers(seed1_mano_dict)
    del buffers['mano.lbs_weights']
    with pytest.raises(ValueError, match=r"hamer\.ckpt: key 'mano\.lbs_weights' missing"):
        mano_from_state_dict(buffers, source='hamer.ckpt')
    buffers = generator.mano_buffers(seed1_mano_dict)
    buffers['mano.posedirs'] = buffers['mano.posedirs'][:, :100]
    with pytest.raises(ValueError, match=r"hamer\.ckpt: 'mano\.posedirs' has shape \(135, 100\)"):
        mano_from_state_dict(buffers, source='hamer.ckpt')
    buffers = generator.mano_buffers(seed1_mano_dict)
    buffers['mano.joint_map'] = buffers['mano.joint_map'].flip(0)
    with pytest.raises(ValueError, match=r"'mano\.joint_map'"):
        mano_from_state_dict(buffers, source='hamer.ckpt')


@pytest.mark.fixture_weights
def test_checkpoint_mano_buffers_equal_the_pkl(fixture_data_dir, mano):
    ckpt = fixture_data_dir / 'hamer_ckpts' / 'checkpoints' / 'hamer.ckpt'
    state_dict = torch.load(ckpt, map_location='cpu', weights_only=True, mmap=True)['state_dict']
    assert_same_mano(mano_from_state_dict(state_dict, source=str(ckpt)), mano)


# ------------------------------------------------------------------------------- chumpy-style and Python-2 pkls

def _py2_pickle(value) -> bytes:
    """A protocol-2 pickle written the way Python 2 wrote MANO_RIGHT.pkl: byte strings, numpy.core and
    scipy.sparse.csc module paths, chumpy Ch objects rebuilt with NEWOBJ + BUILD of their __dict__."""
    def global_(module, name):
        return b'c' + module.encode() + b'\n' + name.encode() + b'\n'

    def string(text):
        data = text if isinstance(text, bytes) else text.encode('latin1')
        return (b'U' + bytes([len(data)]) + data) if len(data) < 256 else (b'T' + struct.pack('<i', len(data)) + data)

    def integer(number):
        return b'J' + struct.pack('<i', number)

    def tuple_(items):
        return b'(' + b''.join(emit(item) for item in items) + b't'

    def new_object(module, name, state):
        return global_(module, name) + b')\x81' + emit(state) + b'b'

    def emit(item):
        if isinstance(item, ChumpyObject):
            return new_object(item.module, item.name, item.state)
        if isinstance(item, scipy.sparse.csc_matrix):
            return new_object('scipy.sparse.csc', 'csc_matrix',
                              {'_shape': item.shape, 'maxprint': 50, 'format': 'csc', 'data': item.data,
                               'indices': item.indices, 'indptr': item.indptr})
        if isinstance(item, np.ndarray):
            array = np.ascontiguousarray(item)
            dtype = (global_('numpy', 'dtype') + tuple_([array.dtype.str[1:], 0, 1]) + b'R'
                     + tuple_([3, '<', None, None, None, -1, -1, 0]) + b'b')
            return (global_('numpy.core.multiarray', '_reconstruct') + global_('numpy', 'ndarray')
                    + tuple_([0]) + string('b') + b'\x87R'
                    + b'(' + integer(1) + tuple_(array.shape) + dtype + b'\x89' + string(array.tobytes()) + b't'
                    + b'b')
        if isinstance(item, dict):
            return b'}' + b''.join(emit(k) + emit(v) + b's' for k, v in item.items())
        if isinstance(item, tuple):
            return tuple_(item)
        if isinstance(item, (str, bytes)):
            return string(item)
        if isinstance(item, bool):
            return b'\x88' if item else b'\x89'
        if isinstance(item, int):
            return integer(item)
        if item is None:
            return b'N'
        raise TypeError(type(item))

    return b'\x80\x02' + emit(value) + b'.'


class ChumpyObject:
    def __init__(self, module, name, state):
        self.module, self.name, self.state = module, name, state


def chumpy_array(x):
    """A plain chumpy array as chumpy pickles it: its __dict__ with the value in 'x'."""
    return ChumpyObject('chumpy.ch', 'Ch', {'x': x, 'dterms': ('x',)})


def test_python2_pickle_with_chumpy_arrays_loads_without_chumpy(tmp_path, mano, seed1_mano_dict):
    real_style = dict(seed1_mano_dict)
    for key in ('v_template', 'shapedirs', 'posedirs', 'weights'):   # chumpy in the real file
        real_style[key] = chumpy_array(real_style[key])
    path = tmp_path / 'MANO_RIGHT.pkl'
    path.write_bytes(_py2_pickle(real_style))
    assert_same_mano(load_mano_pkl(path), mano)
    assert 'chumpy' not in sys.modules


def test_pickled_chumpy_class_is_read_from_its_state(tmp_path, monkeypatch, mano, seed1_mano_dict):
    """A real pickle (made here with a stand-in class registered as chumpy.ch.Ch) loads without chumpy."""
    class Ch:
        def __init__(self, x):
            self.x, self.dterms, self._cache = x, ('x',), {'r': None}

        def __getstate__(self):
            return {k: v for k, v in self.__dict__.items() if k != '_cache'}

    with monkeypatch.context() as patch:
        chumpy, chumpy_ch = types.ModuleType('chumpy'), types.ModuleType('chumpy.ch')
        Ch.__module__, Ch.__qualname__ = 'chumpy.ch', 'Ch'
        chumpy_ch.Ch, chumpy.ch = Ch, chumpy_ch
        patch.setitem(sys.modules, 'chumpy', chumpy)
        patch.setitem(sys.modules, 'chumpy.ch', chumpy_ch)
        data = dict(seed1_mano_dict, shapedirs=Ch(seed1_mano_dict['shapedirs']),
                    v_template=Ch(seed1_mano_dict['v_template']))
        payload = pickle.dumps(data, protocol=2)
    assert b'chumpy.ch' in payload and 'chumpy' not in sys.modules
    path = tmp_path / 'MANO_RIGHT.pkl'
    path.write_bytes(payload)
    assert_same_mano(load_mano_pkl(tmp_path), mano)   # a folder holding MANO_RIGHT.pkl works too


def test_chumpy_expression_without_value_is_refused(tmp_path, seed1_mano_dict):
    weights = seed1_mano_dict['weights']
    expression = ChumpyObject('chumpy.ch_ops', 'add', {'a': chumpy_array(weights), 'b': chumpy_array(weights * 0)})
    path = tmp_path / 'MANO_RIGHT.pkl'
    path.write_bytes(_py2_pickle(dict(seed1_mano_dict, weights=expression)))
    with pytest.raises(ValueError, match=r"MANO_RIGHT\.pkl: 'weights' is a chumpy\.ch_ops\.add object without"):
        load_mano_pkl(path)


# --------------------------------------------------------------------------------------------- refused pickles

HOSTILE_GLOBALS = [('posix', 'system'), ('os', 'system'), ('builtins', 'eval'), ('__builtin__', 'exec'),
                   ('subprocess', 'Popen'), ('numpy', 'load'), ('numpy.testing._private.utils', 'runstring'),
                   ('torch', 'load'), ('scipy.sparse', 'load_npz')]


@pytest.mark.parametrize('module,name', HOSTILE_GLOBALS)
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, module, name):
    marker = tmp_path / 'ran'
    # Protocol 0: c<module>\n<name>\n (S'<arg>'\n tR  == module.name(arg)
    payload = f"c{module}\n{name}\n(S'touch {marker}'\ntR.".encode()
    path = tmp_path / 'MANO_RIGHT.pkl'
    path.write_bytes(payload)
    with pytest.raises(ValueError) as error:
        load_mano_pkl(path)
    assert str(path) in str(error.value) and f'{module}.{name}' in str(error.value)
    assert not marker.exists()


def test_hostile_object_inside_a_mano_dict_is_refused(tmp_path, seed1_mano_dict):
    marker = tmp_path / 'ran'

    class Exploit:
        def __reduce__(self):
            import os
            return os.system, (f'touch {marker}',)

    path = tmp_path / 'MANO_RIGHT.pkl'
    path.write_bytes(pickle.dumps(dict(seed1_mano_dict, bs_style=Exploit()), protocol=2))
    with pytest.raises(ValueError, match=r'refused to load the global (posix|os)\.system'):
        load_mano_pkl(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ other bad MANO files

def _write(tmp_path, content) -> str:
    path = tmp_path / 'MANO_RIGHT.pkl'
    path.write_bytes(pickle.dumps(content, protocol=2))
    return str(path)


def test_missing_key_names_file_and_key(tmp_path, seed1_mano_dict):
    content = dict(seed1_mano_dict)
    del content['weights']
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match=re.escape(f"{path}: key 'weights' missing")):
        load_mano_pkl(path)


def test_wrong_shape_names_file_and_key(tmp_path, seed1_mano_dict):
    path = _write(tmp_path, dict(seed1_mano_dict, v_template=seed1_mano_dict['v_template'][:700]))
    with pytest.raises(ValueError, match=re.escape(f"{path}: 'v_template' has shape (700, 3), expected (778, 3)")):
        load_mano_pkl(path)


def test_wrong_kinematic_tree_is_refused(tmp_path, seed1_mano_dict):
    kintree = seed1_mano_dict['kintree_table'].copy()
    kintree[0, 5] = 0
    path = _write(tmp_path, dict(seed1_mano_dict, kintree_table=kintree))
    with pytest.raises(ValueError, match=re.escape(path) + r": 'kintree_table' is .* expected the MANO kinematic tree"):
        load_mano_pkl(path)


def test_truncated_non_dict_and_absent_files(tmp_path, mano_pkl):
    truncated = tmp_path / 'MANO_RIGHT.pkl'
    truncated.write_bytes(mano_pkl.read_bytes()[:5000])
    with pytest.raises(ValueError, match=re.escape(f'{truncated}: cannot read this file as a MANO pickle')):
        load_mano_pkl(truncated)
    path = _write(tmp_path, [1, 2, 3])
    with pytest.raises(ValueError, match='expected a dict of MANO arrays'):
        load_mano_pkl(path)
    with pytest.raises(FileNotFoundError, match='MANO_RIGHT.pkl'):
        load_mano_pkl(tmp_path / 'nowhere')


def test_layer_keeps_float32_under_autocast(mano, public_case):
    layer = ManoLayer(mano)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer(torch.from_numpy(public_case['global_orient']), torch.from_numpy(public_case['hand_pose']),
                    torch.from_numpy(public_case['betas']))
    assert out['vertices'].dtype == torch.float32
    np.testing.assert_allclose(out['vertices'].numpy(), public_case['pred_vertices'], rtol=0, atol=2e-6)
    assert set(layer.state_dict()) == {'v_template', 'shapedirs', 'posedirs', 'J_regressor', 'lbs_weights', 'parents'}
    assert mano_module.NUM_POSE_BASIS == layer.posedirs.shape[0]


# ------------------------------------------------------------------------------- damaged or crafted MANO files

def _nan_at(array):
    array = np.array(array, dtype=np.float64, copy=True)
    array.flat[7] = np.nan
    return array


def _sparse_with_short_indptr(matrix):
    broken = matrix.copy()
    broken.indptr = broken.indptr[:10]
    return broken


@pytest.mark.parametrize('key, change, expected', [
    ('v_template', lambda v: np.array([{'x': 1}] * 778 * 3, dtype=object).reshape(778, 3), r'holds object values'),
    ('weights', lambda w: w.astype(str), r'holds <U\d+ values'),
    ('f', lambda f: f.astype(np.float64), r'holds float64 values, expected integers'),
    ('kintree_table', lambda k: k.astype(np.float64), r'holds float64 values, expected integers'),
    ('J_regressor', _sparse_with_short_indptr, r'inconsistent sparse matrix \(index pointer size'),
    ('J_regressor', lambda j: scipy.sparse.csc_matrix(_nan_at(j.toarray())), r'non-finite values'),
    ('weights', _nan_at, r'non-finite values'),
    ('posedirs', _nan_at, r'non-finite values'),
    ('shapedirs', lambda s: _nan_at(s) * np.inf, r'non-finite values'),
    ('v_template', lambda v: v * 1e300, r'beyond float32 range'),
])
def test_damaged_arrays_are_refused_naming_file_and_key(tmp_path, generator, seed1_mano_dict, key, change, expected):
    content = dict(seed1_mano_dict)
    content[key] = change(content[key])
    path = tmp_path / 'MANO_RIGHT.pkl'
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(ValueError, match=rf"MANO_RIGHT\.pkl: '{key}'.*{expected}") as raised:
        load_mano_pkl(path)
    assert '\n' not in str(raised.value)
    # setup-weights --verify-only / check report it as a line naming the file, not a traceback.
    from hamer_ros.provisioning import weights
    data_dir = tmp_path / '_DATA'
    (data_dir / 'data' / 'mano').mkdir(parents=True)
    shutil.copy(path, data_dir / 'data' / 'mano' / 'MANO_RIGHT.pkl')
    checks = {c.name: c for c in weights.verify(data_dir)}
    assert not checks['MANO'].ok and f"'{key}'" in checks['MANO'].detail


def test_state_dict_buffers_with_nan_are_refused(generator, seed1_mano_dict):
    buffers = generator.mano_buffers(seed1_mano_dict)
    buffers['mano.lbs_weights'][3, 2] = float('nan')
    with pytest.raises(ValueError, match=r"hamer\.ckpt: 'mano\.lbs_weights' holds non-finite values"):
        mano_from_state_dict(buffers, source='hamer.ckpt')


def test_seed1_mano_file_holds_the_values_the_reference_outputs_were_made_with(mano_pkl, generator):
    """test/fixture_weights.py writes the seed-1 MANO_RIGHT.pkl with the published values: each one pickles to
    the same bytes as in the file the outputs were made with, 'hands_components' (from LAPACK's QR, CPU-kernel
    dependent in its last float64 bits) the same after float32 rounding and orthonormal. The checkpoint's
    float32 copies are covered by the state-dict hash that scripts/prepare_test_data.py checks."""
    from conftest import prepare_test_data
    trusted = {('numpy', 'ndarray'), ('numpy', 'dtype'), ('numpy._core.multiarray', '_reconstruct'),
               ('_codecs', 'encode'), ('scipy.sparse._csc', 'csc_matrix')}

    class Unpickler(pickle.Unpickler):   # the globals the generator's file uses, nothing else
        def find_class(self, module, name):
            if (module, name) not in trusted:
                raise pickle.UnpicklingError(f'{module}.{name} not expected in the fixture MANO file')
            return super().find_class(module, name)

    with open(mano_pkl, 'rb') as file:
        content = Unpickler(file).load()
    assert generator.mano_digests(content) == prepare_test_data.SEED1_MANO_DIGESTS
    components = content['hands_components']
    np.testing.assert_allclose(components @ components.T, np.eye(45), atol=1e-12)
