"""OBJ writing and reading: exact round trips, foreign OBJ features, clear errors."""
import numpy as np
import pytest

from hamer_ros.io.mesh_io import read_obj, write_obj


@pytest.fixture
def mesh():
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(50, 3)).astype(np.float32) * 0.1
    faces = rng.integers(0, 50, size=(80, 3))
    normals = rng.normal(size=(50, 3)).astype(np.float32)
    return vertices, faces, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def test_round_trip_is_exact_for_float32(tmp_path, mesh):
    vertices, faces, _ = mesh
    path = write_obj(tmp_path / 'sub' / 'hand.obj', vertices, faces, comment='right hand\ntrack 3')
    back = read_obj(path)
    np.testing.assert_array_equal(back.vertices.astype(np.float32), vertices)
    np.testing.assert_array_equal(back.faces, faces)
    assert back.normals is None
    text = path.read_text().splitlines()
    assert text[:2] == ['# right hand', '# track 3']
    assert sum(line.startswith('v ') for line in text) == 50
    assert sum(line.startswith('f ') for line in text) == 80
    # OBJ indices are 1-based
    assert text[2 + 50].split()[1:] == [str(i + 1) for i in faces[0]]


def test_round_trip_with_normals(tmp_path, mesh):
    vertices, faces, normals = mesh
    back = read_obj(write_obj(tmp_path / 'hand.obj', vertices, faces, normals=normals))
    np.testing.assert_array_equal(back.vertices.astype(np.float32), vertices)
    np.testing.assert_array_equal(back.faces, faces)
    np.testing.assert_array_equal(back.normals.astype(np.float32), normals)


def test_reads_foreign_obj_features(tmp_path):
    # quads (fan-split), texture coordinates, negative (relative) indices, comments and other records
    (tmp_path / 'quad.obj').write_text(
        '# exported elsewhere\no quad\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvn 0 0 1\n'
        's off\nf 1/1/1 2/1/1 3/1/1 4/1/1\nf -4 -2 -1\n')
    back = read_obj(tmp_path / 'quad.obj')
    np.testing.assert_array_equal(back.faces, [[0, 1, 2], [0, 2, 3], [0, 2, 3]])
    assert back.vertices.shape == (4, 3)
    assert back.normals is None      # the last face names no normals


def test_errors_name_the_file_and_line(tmp_path, mesh):
    vertices, faces, _ = mesh
    with pytest.raises(FileNotFoundError, match='missing.obj'):
        read_obj(tmp_path / 'missing.obj')
    (tmp_path / 'bad.obj').write_text('v 0 0 0\nv 1 0 0\nf 1 2 7\n')
    with pytest.raises(ValueError, match=r'bad.obj:3.*out of range'):
        read_obj(tmp_path / 'bad.obj')
    (tmp_path / 'text.obj').write_text('v 0 zero 0\n')
    with pytest.raises(ValueError, match=r'text.obj:1'):
        read_obj(tmp_path / 'text.obj')
    with pytest.raises(ValueError, match='face indices'):
        write_obj(tmp_path / 'x.obj', vertices, faces + 50)
    with pytest.raises(ValueError, match='normals'):
        write_obj(tmp_path / 'x.obj', vertices, faces, normals=vertices[:10])
    with pytest.raises(ValueError, match='vertices'):
        write_obj(tmp_path / 'x.obj', vertices[:, :2], faces)


# ------------------------------------------------------------------------------------- mano-to-obj command

def run_command(name, argv):
    """Run a registered `python -m hamer_ros` command in-process (its own parser, as the dispatcher builds it)."""
    import argparse
    import importlib

    from hamer_ros.cli import COMMANDS
    module = importlib.import_module(f'hamer_ros.cli.{COMMANDS[name][0]}')
    parser = argparse.ArgumentParser(prog=name)
    module.add_arguments(parser)
    return module.run(parser.parse_args([str(a) for a in argv]))


@pytest.fixture(scope='module')
def fixture_mano(mano_only_data_dir):
    from hamer_ros.hamer.mano import load_mano_pkl
    return load_mano_pkl(mano_only_data_dir / 'data' / 'mano' / 'MANO_RIGHT.pkl')


def test_mano_to_obj_writes_the_shaped_template(tmp_path, mano_only_data_dir, fixture_mano):
    betas = [0.5, -1.0, 0.25]
    out = tmp_path / 'hand.obj'
    assert run_command('mano-to-obj', ['--data-dir', mano_only_data_dir, '--out', out, '--betas', *betas]) == 0
    mesh = read_obj(out)
    # In the rest pose every skinning transform is the identity: vertices = template + shape blend (docs/model.md §4).
    expected = fixture_mano.v_template + fixture_mano.shapedirs[:, :, :3] @ np.array(betas, np.float32)
    np.testing.assert_allclose(mesh.vertices, expected, atol=2e-6)
    np.testing.assert_array_equal(mesh.faces, fixture_mano.faces)
    assert mesh.normals is None
    assert 'MANO_RIGHT.pkl' in out.read_text().splitlines()[1]


def test_mano_to_obj_closed_left_with_normals(tmp_path, mano_only_data_dir, fixture_mano):
    from hamer_ros.hamer.mano import WRIST_CAP_FACES
    out = tmp_path / 'left.obj'
    pkl = mano_only_data_dir / 'data' / 'mano' / 'MANO_RIGHT.pkl'
    run_command('mano-to-obj', ['--mano', pkl, '--out', out, '--closed', '--side', 'left', '--normals'])
    mesh = read_obj(out)
    np.testing.assert_allclose(mesh.vertices, fixture_mano.v_template * [-1, 1, 1], atol=2e-6)
    closed = np.concatenate([fixture_mano.faces, WRIST_CAP_FACES])
    np.testing.assert_array_equal(mesh.faces, closed[:, [0, 2, 1]])     # mirrored: reversed winding
    np.testing.assert_allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-6)
    # Mirroring the geometry and reversing the winding keeps the normals mirrored, not flipped.
    right = tmp_path / 'right.obj'
    run_command('mano-to-obj', ['--mano', pkl, '--out', right, '--closed', '--normals'])
    np.testing.assert_allclose(mesh.normals, read_obj(right).normals * [-1, 1, 1], atol=1e-6)


def test_mano_to_obj_errors_say_what_to_do(tmp_path, mano_only_data_dir):
    with pytest.raises(FileNotFoundError, match='no MANO model.*--mano'):
        run_command('mano-to-obj', ['--data-dir', tmp_path, '--out', tmp_path / 'x.obj'])
    with pytest.raises(ValueError, match='at most 10'):
        run_command('mano-to-obj', ['--data-dir', mano_only_data_dir, '--out', tmp_path / 'x.obj',
                                    '--betas', *range(11)])
    assert not (tmp_path / 'x.obj').exists()


@pytest.mark.fixture_weights
def test_mano_to_obj_from_checkpoint_equals_pkl(tmp_path, fixture_data_dir):
    ckpt = fixture_data_dir / 'hamer_ckpts' / 'checkpoints' / 'hamer.ckpt'
    run_command('mano-to-obj', ['--checkpoint', ckpt, '--out', tmp_path / 'ckpt.obj', '--betas', '1'])
    run_command('mano-to-obj', ['--mano', fixture_data_dir / 'data' / 'mano', '--out', tmp_path / 'pkl.obj',
                                '--betas', '1'])
    from_ckpt, from_pkl = read_obj(tmp_path / 'ckpt.obj'), read_obj(tmp_path / 'pkl.obj')
    np.testing.assert_array_equal(from_ckpt.vertices, from_pkl.vertices)
    np.testing.assert_array_equal(from_ckpt.faces, from_pkl.faces)
    assert 'hamer.ckpt' in (tmp_path / 'ckpt.obj').read_text().splitlines()[1]
