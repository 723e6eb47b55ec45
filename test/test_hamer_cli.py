"""`python -m hamer_ros predict` end to end: a real process writes the .npz, the test reads it back."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hamer_ros.hamer.model import HamerModel
from hamer_ros.types import CameraIntrinsics, HandDetection
from hamer_test_files import write_small_data_dir

KEYS = {'crops': (3, 256, 256), 'pred_cam': (3,), 'betas': (10,), 'global_orient': (3, 3), 'hand_pose': (15, 3, 3),
        'vertices': (778, 3), 'keypoints_3d': (21, 3), 'cam_t': (3,), 'keypoints_2d': (21, 2), 'focal_length': (2,),
        'box_center': (2,), 'box_size': ()}


def run_predict(*args, cwd):
    return subprocess.run([sys.executable, '-m', 'hamer_ros', 'predict', *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def small_data_dir(tmp_path_factory):
    return write_small_data_dir(tmp_path_factory.mktemp('cli') / '_DATA', seed=2)


@pytest.fixture(scope='module')
def image_file(tmp_path_factory):
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), (0, 0), 3)
    path = tmp_path_factory.mktemp('img') / 'scene.png'
    cv2.imwrite(str(path), image)
    return path


def test_predict_writes_every_key_in_box_order(small_data_dir, image_file, tmp_path):
    out = tmp_path / 'result.npz'
    boxes = [([50, 40, 150, 200], 'left'), ([200, 60, 290, 180], 'right'), ([-20, 150, 60, 330], 'left')]
    args = ['--data-dir', small_data_dir, '--image', image_file, '--out', out, '--device', 'cpu',
            '--intrinsics', 420, 430, 190, 160]
    for box, side in boxes:
        args += ['--box', *box, '--side', side]
    done = run_predict(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f'wrote 3 hand(s) to {out}' in done.stdout
    with np.load(out) as saved:
        assert set(saved.files) == set(KEYS)
        for key, shape in KEYS.items():
            assert saved[key].shape == (3,) + shape and saved[key].dtype == np.float32, key
        arrays = dict(saved)
    # Same numbers as the library, in the order given.
    model = HamerModel.load(small_data_dir, device='cpu')
    expected = model.predict_batch(cv2.imread(str(image_file)), [HandDetection(b, s) for b, s in boxes],
                                   CameraIntrinsics(420, 430, 190, 160))
    np.testing.assert_array_equal(arrays['crops'], expected.crops)
    for i, hand in enumerate(expected.hands):
        for key in KEYS:
            if key != 'crops':
                np.testing.assert_allclose(arrays[key][i], getattr(hand, key), atol=1e-6, err_msg=key)
    np.testing.assert_allclose(arrays['focal_length'], [[420, 430]] * 3)
    np.testing.assert_allclose(arrays['box_center'][0], [100, 120])


def test_predict_errors_say_what_to_do(small_data_dir, image_file, tmp_path):
    done = run_predict('--data-dir', small_data_dir, '--image', image_file, '--out', tmp_path / 'x.npz',
                       '--box', 1, 2, 30, 40, '--box', 5, 5, 50, 50, '--side', 'left', cwd=tmp_path)
    assert done.returncode == 2 and '2 --box but 1 --side: give one --side per --box' in done.stderr
    done = run_predict('--data-dir', small_data_dir, '--image', tmp_path / 'missing.png', '--out', tmp_path / 'x.npz',
                       '--box', 1, 2, 30, 40, '--side', 'left', cwd=tmp_path)
    assert done.returncode == 2 and 'cannot read image' in done.stderr and 'missing.png' in done.stderr
    done = run_predict('--data-dir', tmp_path / 'empty', '--image', image_file, '--out', tmp_path / 'x.npz',
                       '--box', 1, 2, 30, 40, '--side', 'right', cwd=tmp_path)
    assert done.returncode == 2 and 'no HaMeR checkpoint at' in done.stderr
    assert not (tmp_path / 'x.npz').exists()


@pytest.mark.fixture_weights
def test_predict_public_case_matches_the_official_code(fixture_data_dir, public_case, tmp_path):
    """The official pipeline's image and box through the command line: crop and outputs as in the fixture."""
    image = tmp_path / 'scene.png'
    cv2.imwrite(str(image), public_case['source_image_rgb'][:, :, ::-1])
    out = tmp_path / 'public.npz'
    done = run_predict('--checkpoint', fixture_data_dir / 'hamer_ckpts' / 'checkpoints' / 'hamer.ckpt',
                       '--image', image, '--box', *public_case['box_xyxy'][0], '--side', 'right',
                       '--out', out, '--device', 'cpu', cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = dict(np.load(out))
    np.testing.assert_allclose(saved['crops'], public_case['img'], atol=1e-6, rtol=0)
    for mine, theirs, atol in (('pred_cam', 'pred_cam', 1e-5), ('betas', 'betas', 1e-5),
                               ('hand_pose', 'hand_pose', 1e-5), ('vertices', 'pred_vertices', 2e-6),
                               ('keypoints_3d', 'pred_keypoints_3d', 2e-6)):
        np.testing.assert_allclose(saved[mine], public_case[theirs], atol=atol, rtol=0, err_msg=mine)
    np.testing.assert_allclose(saved['global_orient'], public_case['global_orient'][:, 0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(saved['box_center'], public_case['box_center'])
    np.testing.assert_allclose(saved['box_size'], public_case['box_size'])
    np.testing.assert_allclose(saved['focal_length'], [[12500, 12500]])
    # Official full-image placement (docs/model.md §5.3): tz = 2 f / (box_size s), ty from the box's offset to the centre.
    s, tx, ty = public_case['pred_cam'][0]
    bs = public_case['box_size'][0] * s
    np.testing.assert_allclose(saved['cam_t'][0], [tx, 2 * (195 - 240) / bs + ty, 2 * 12500 / bs], atol=1e-4,
                               rtol=1e-5)


def test_predict_int8_stays_within_tolerance_of_fp32(small_data_dir, image_file, tmp_path):
    """`--precision int8` (CPU dynamic quantisation) runs end to end; quantised, so close to fp32 but not equal."""
    boxes = [([50, 40, 150, 200], 'left'), ([200, 60, 290, 180], 'right')]
    args = ['--data-dir', small_data_dir, '--image', image_file, '--device', 'cpu', '--intrinsics', 420, 430, 190, 160]
    for box, side in boxes:
        args += ['--box', *box, '--side', side]
    saved = {}
    for precision in ('fp32', 'int8'):
        out = tmp_path / f'{precision}.npz'
        done = run_predict(*args, '--precision', precision, '--out', out, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f'on cpu, {precision}' in done.stdout
        saved[precision] = dict(np.load(out))
    fp32, int8 = saved['fp32'], saved['int8']
    np.testing.assert_array_equal(int8['crops'], fp32['crops'])   # quantisation starts after the crop
    vertex_error = np.abs(int8['vertices'] - fp32['vertices']).max()
    # Stated tolerance (as for the library's int8, test_hamer_runtime.py): 3 mm, 0.02 per rotation-matrix entry,
    # a translation 2 % of the hand's distance, 3 px (observed: 1.3 mm, 0.0076, 0.34 %, 1.5 px); and not
    # bit-equal, or the flag did not reach the model.
    assert 1e-6 < vertex_error < 3e-3
    for key in ('global_orient', 'hand_pose'):
        assert np.abs(int8[key] - fp32[key]).max() < 2e-2, key
    distance = np.linalg.norm(fp32['cam_t'], axis=1)
    assert (np.linalg.norm(int8['cam_t'] - fp32['cam_t'], axis=1) < 2e-2 * distance).all()
    assert np.abs(int8['keypoints_2d'] - fp32['keypoints_2d']).max() < 3.0


def test_predict_bf16_on_the_cpu_runs_bf16_where_the_cpu_has_it_else_says_so_and_runs_fp32(
        small_data_dir, image_file, tmp_path):
    """`--precision bf16 --device cpu`: bf16 weights on CPUs with AMX/AVX512_BF16 (close to fp32, not equal);
    elsewhere the warning and exactly fp32's result. Which branch runs depends on this machine's CPU."""
    from hamer_ros import cpu_info

    args = ['--data-dir', small_data_dir, '--image', image_file, '--device', 'cpu', '--box', 50, 40, 150, 200,
            '--side', 'left']
    saved, outputs = {}, {}
    for precision in ('fp32', 'bf16'):
        out = tmp_path / f'{precision}.npz'
        done = run_predict(*args, '--precision', precision, '--out', out, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        saved[precision], outputs[precision] = dict(np.load(out)), done
    vertex_error = np.abs(saved['bf16']['vertices'] - saved['fp32']['vertices']).max()
    if cpu_info.native_bf16():
        assert 'on cpu, bf16' in outputs['bf16'].stdout
        assert 1e-6 < vertex_error < 1e-3   # the library's bf16 tolerance (test_hamer_runtime.py)
    else:
        assert "precision 'bf16' on the CPU needs native bf16 instructions" in outputs['bf16'].stderr
        assert 'on cpu, fp32' in outputs['bf16'].stdout and vertex_error == 0
