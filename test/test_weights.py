"""setup-weights: install from tarballs and folders laid out like the official demo data, refuse unsafe archives,
fail clearly offline, and verify what is there (checkpoint tensors, MANO source) without building the model."""
import io
import os
import shutil
import tarfile

import numpy as np
import pytest

from hamer_ros.provisioning import weights
from hamer_ros.cli import main
from hamer_ros.hamer.model import HamerModel

from hamer_test_files import write_small_data_dir
from offline_helpers import synthetic_image, two_hand_detections


def _tarball(path, root, prefix='_DATA', extra=()):
    """A tar.gz of the folder `root` under `prefix`, like hamer_demo_data.tar.gz (+ `extra` (name, bytes))."""
    with tarfile.open(path, 'w:gz') as tar:
        tar.add(root, arcname=prefix)
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope='module')
def small_with_mano(tmp_path_factory):
    return write_small_data_dir(tmp_path_factory.mktemp('with_mano') / '_DATA')


@pytest.fixture(scope='module')
def small_without_mano(tmp_path_factory, mano_only_data_dir):
    """A small checkpoint without MANO buffers plus the seed-1 synthetic MANO_RIGHT.pkl and mean params."""
    root = write_small_data_dir(tmp_path_factory.mktemp('without_mano') / '_DATA', with_mano=False)
    shutil.copytree(mano_only_data_dir / 'data', root / 'data')
    return root


def test_official_tarball_layout_installs_and_loads(tmp_path, small_with_mano, capsys):
    archive = _tarball(tmp_path / 'hamer_demo_data.tar.gz', small_with_mano,
                       extra=[('_DATA/vitpose_ckpts/vitpose+_huge/wholebody.pth', b'not used')])
    data_dir = tmp_path / 'installed' / '_DATA'
    assert main(['setup-weights', '--from', str(archive), '--data-dir', str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert 'skipped (not used by hamer_ros): _DATA/vitpose_ckpts' in out
    assert "MANO: from the checkpoint's mano.* buffers (MANO_RIGHT.pkl not needed)" in out and 'ready' in out
    assert not (data_dir / 'vitpose_ckpts').exists() and not list(data_dir.glob('.*'))
    assert (data_dir / 'hamer_ckpts/checkpoints/hamer.ckpt').read_bytes() == \
        (small_with_mano / 'hamer_ckpts/checkpoints/hamer.ckpt').read_bytes()
    # The installed folder is what the model loads, with the same outputs as the source folder.
    image = synthetic_image()
    installed = HamerModel.load(data_dir).predict(image, two_hand_detections())
    original = HamerModel.load(small_with_mano).predict(image, two_hand_detections())
    np.testing.assert_array_equal(installed[1].vertices, original[1].vertices)


def test_mano_pickle_and_default_data_dir(tmp_path, small_without_mano, monkeypatch, capsys):
    archive = _tarball(tmp_path / 'data.tar', small_without_mano, prefix='./_DATA')
    monkeypatch.setenv('HAMER_ROS_DATA_DIR', str(tmp_path / 'env_data'))
    assert main(['setup-weights', '--from', str(archive)]) == 0
    out = capsys.readouterr().out
    assert 'MANO: ' in out and 'MANO_RIGHT.pkl (loads)' in out
    assert (tmp_path / 'env_data' / 'data' / 'mano' / 'MANO_RIGHT.pkl').is_file()
    assert (tmp_path / 'env_data' / 'data' / 'mano_mean_params.npz').is_file()
    assert HamerModel.load().mano.source.endswith('MANO_RIGHT.pkl')


def test_folder_source_is_linked_not_copied(tmp_path, small_with_mano):
    parent = tmp_path / 'download'
    shutil.copytree(small_with_mano, parent / '_DATA', copy_function=os.link)
    data_dir = tmp_path / 'data'
    installed = weights.install(parent, data_dir, log=lambda _: None)
    checkpoint = data_dir / 'hamer_ckpts' / 'checkpoints' / 'hamer.ckpt'
    assert checkpoint in installed
    assert checkpoint.stat().st_ino == (small_with_mano / 'hamer_ckpts/checkpoints/hamer.ckpt').stat().st_ino
    assert weights.ready(weights.verify(data_dir))
    assert weights.install(data_dir, data_dir, log=lambda _: None) == []    # itself: nothing to do


def _member(name, kind=tarfile.REGTYPE, data=b'x', link=''):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize('name, kind, link, why', [
    ('/etc/hamer_evil', tarfile.REGTYPE, '', 'absolute path'),
    ('_DATA/../../escaped.txt', tarfile.REGTYPE, '', '".." component'),
    ('_DATA/data/mano/MANO_RIGHT.pkl', tarfile.SYMTYPE, '/etc/passwd', 'link'),
    ('_DATA/hamer_ckpts/x', tarfile.LNKTYPE, '../../outside', 'link'),
    ('_DATA/hamer_ckpts/fifo', tarfile.FIFOTYPE, '', 'special file'),
])
def test_unsafe_archives_are_refused_whole(tmp_path, small_with_mano, name, kind, link, why):
    archive = tmp_path / 'evil.tar.gz'
    with tarfile.open(archive, 'w:gz') as tar:
        tar.add(small_with_mano, arcname='_DATA')       # a valid install first, then the bad member
        tar.addfile(*_member(name, kind, link=link))
    data_dir = tmp_path / 'parent' / '_DATA'
    with pytest.raises(ValueError, match='refused') as error:
        weights.install(archive, data_dir, log=lambda _: None)
    assert why.split()[0] in str(error.value) and 'Nothing was installed' in str(error.value)
    assert not (data_dir / 'hamer_ckpts').exists() and not list(data_dir.glob('.*'))
    assert not (tmp_path / 'escaped.txt').exists() and not (tmp_path / 'parent' / 'escaped.txt').exists()


def test_broken_and_incomplete_sources(tmp_path, small_with_mano, capsys):
    truncated = tmp_path / 'truncated.tar.gz'
    full = _tarball(tmp_path / 'full.tar.gz', small_with_mano)
    truncated.write_bytes(full.read_bytes()[:len(full.read_bytes()) // 2])
    with pytest.raises(ValueError, match='damaged or truncated'):
        weights.install(truncated, tmp_path / 'a', log=lambda _: None)
    unrelated = _tarball(tmp_path / 'other.tar.gz', tmp_path / 'a', prefix='photos')
    with pytest.raises(ValueError, match='holds none of _DATA/hamer_ckpts/, _DATA/data/'):
        weights.install(unrelated, tmp_path / 'b', log=lambda _: None)
    # Only MANO: installs, but the folder is not ready and says what to do.
    mano_only = tmp_path / 'mano_only'
    (mano_only / 'data').mkdir(parents=True)
    (mano_only / 'data' / 'mano_mean_params.npz').write_bytes(b'npz')
    assert main(['setup-weights', '--from', str(mano_only), '--data-dir', str(tmp_path / 'c')]) == 1
    out = capsys.readouterr().out
    assert 'MISSING           HaMeR checkpoint' in out and 'fix: python -m hamer_ros setup-weights' in out
    assert 'not ready' in out
    # A damaged checkpoint is found by verification.
    damaged = tmp_path / 'd'
    shutil.copytree(small_with_mano, damaged)
    ckpt = damaged / 'hamer_ckpts' / 'checkpoints' / 'hamer.ckpt'
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    checks = {c.name: c for c in weights.verify(damaged)}
    assert not checks['HaMeR checkpoint'].ok and 'damaged' in checks['HaMeR checkpoint'].detail
    assert not weights.ready(list(checks.values()))


def test_checkpoint_that_does_not_match_its_config(tmp_path, small_with_mano):
    folder = tmp_path / 'mismatch'
    shutil.copytree(small_with_mano, folder)
    (folder / 'hamer_ckpts' / 'model_config.yaml').unlink()     # the released (ViT-H) sizes are assumed then
    checks = {c.name: c for c in weights.verify(folder)}
    assert checks['model_config.yaml'].ok and not checks['model_config.yaml'].required
    assert not checks['HaMeR checkpoint'].ok and 'do not belong together' in checks['HaMeR checkpoint'].detail


def test_without_network_the_download_fails_with_the_alternative(tmp_path, capsys):
    code = main(['setup-weights', '--data-dir', str(tmp_path / 'data'), '--url', 'http://127.0.0.1:9/demo.tar.gz'])
    assert code == 2
    err = capsys.readouterr().err
    assert 'cannot download the HaMeR demo data' in err and 'setup-weights --from hamer_demo_data.tar.gz' in err
    assert not list(tmp_path.rglob('*.partial')) and not list(tmp_path.rglob('*.tar.gz'))
    assert weights.OFFICIAL_URL.startswith('https://') and 'hamer_demo_data.tar.gz' in weights.OFFICIAL_URL


# ---------------------------------------------------------------------------- hostile and broken archives

def _installed(tmp_path, small_with_mano):
    """A working install, to check that a refused archive leaves it exactly as it was."""
    data_dir = tmp_path / 'installed' / '_DATA'
    weights.install(small_with_mano, data_dir, log=lambda _: None)
    files = {p.relative_to(data_dir): p.read_bytes() for p in data_dir.rglob('*') if p.is_file()}
    assert weights.ready(weights.verify(data_dir)) and files
    return data_dir, files


def _assert_unchanged(data_dir, files):
    now = {p.relative_to(data_dir): p.read_bytes() for p in data_dir.rglob('*') if p.is_file()}
    assert now == files and not list(data_dir.glob('.*'))
    assert weights.ready(weights.verify(data_dir))


def _header_only_member(name, size):
    """A tar header declaring `size` bytes and no data at all (as a 226-byte sparse or truncated archive)."""
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT)


def test_member_declaring_a_huge_size_is_refused_from_its_header(tmp_path, small_with_mano):
    data_dir, files = _installed(tmp_path, small_with_mano)
    for name in ('_DATA/hamer_ckpts/checkpoints/hamer.ckpt', '_DATA/vitpose_ckpts/huge.pth'):    # used or skipped
        archive = tmp_path / 'huge.tar.gz'
        import gzip
        archive.write_bytes(gzip.compress(_header_only_member(name, 50 * 10**9)))
        with pytest.raises(ValueError, match='declares 50.0 GB, more than the 8.6 GB allowed for one file'
                           ) as error:
            weights.install(archive, data_dir, log=lambda _: None)
        assert 'hamer.ckpt of 2.7 GB' in str(error.value) and 'Nothing was installed' in str(error.value)
        _assert_unchanged(data_dir, files)


def test_archive_totals_are_bounded(tmp_path, small_with_mano, monkeypatch):
    data_dir, files = _installed(tmp_path, small_with_mano)
    blob = os.urandom(1 << 20)
    archive = _tarball(tmp_path / 'many.tar.gz', small_with_mano,
                       extra=[(f'_DATA/vitpose_ckpts/part{i}.bin', blob) for i in range(6)])
    monkeypatch.setattr(weights, 'MAX_ARCHIVE_BYTES', 5 << 20)
    with pytest.raises(ValueError, match='its members hold more than 0.0 GB in all'):
        weights.install(archive, data_dir, log=lambda _: None)
    monkeypatch.setattr(weights, 'MAX_ARCHIVE_BYTES', 1 << 30)
    monkeypatch.setattr(weights, 'MAX_INSTALL_BYTES', 1 << 10)
    with pytest.raises(ValueError, match='the parts hamer_ros uses hold more than'):
        weights.install(archive, data_dir, log=lambda _: None)
    _assert_unchanged(data_dir, files)


def test_free_space_is_checked_before_writing(tmp_path, small_with_mano, monkeypatch, capsys):
    data_dir, files = _installed(tmp_path, small_with_mano)
    archive = _tarball(tmp_path / 'ok.tar.gz', small_with_mano)
    written = []
    monkeypatch.setattr(weights, '_free_bytes', lambda folder: written.append(folder) or 1 << 20)
    assert main(['setup-weights', '--from', str(archive), '--data-dir', str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert 'not enough free disk space' in err and 'hamer.ckpt needs' in err and '0.0 GB free' in err
    assert err.count('\n') == 1, 'one line, no traceback'
    assert written and all(folder.name == '.setup-weights.partial' for folder in written)
    _assert_unchanged(data_dir, files)


def test_duplicate_paths_and_file_folder_clashes_are_refused_whole(tmp_path, small_with_mano):
    data_dir, files = _installed(tmp_path, small_with_mano)
    for extra, message in (
            ([('_DATA/data/mano_mean_params.npz', b'first'), ('_DATA/hamer_ckpts/model_config.yaml', b'MODEL: {}'),
              ('_DATA/data/mano_mean_params.npz', b'second')], 'hamer_ckpts/model_config.yaml appears twice'),
            ([('_DATA/hamer_ckpts/model_config.yaml/x', b'x')], 'is both a file and a folder')):
        archive = _tarball(tmp_path / 'dup.tar.gz', small_with_mano, extra=extra)
        with pytest.raises(ValueError, match=message) as error:
            weights.install(archive, data_dir, log=lambda _: None)
        assert 'damaged or truncated' not in str(error.value) and 'Nothing was installed' in str(error.value)
        _assert_unchanged(data_dir, files)
        assert not (data_dir / 'data').exists()


def test_zip_archive_is_named_as_unsupported(tmp_path, small_with_mano, capsys):
    import zipfile
    archive = tmp_path / 'hamer_demo_data.zip'
    with zipfile.ZipFile(archive, 'w') as z:
        for path in small_with_mano.rglob('*'):
            if path.is_file():
                z.write(path, f'_DATA/{path.relative_to(small_with_mano)}')
    assert main(['setup-weights', '--from', str(archive), '--data-dir', str(tmp_path / 'd')]) == 2
    err = capsys.readouterr().err
    assert 'is a zip archive' in err and 'Unpack the zip and pass its _DATA folder with --from' in err
    assert 'truncated' not in err


def test_garbage_checkpoint_never_replaces_a_working_install(tmp_path, small_with_mano):
    data_dir, files = _installed(tmp_path, small_with_mano)
    garbage = tmp_path / 'garbage' / '_DATA'
    shutil.copytree(small_with_mano, garbage)
    (garbage / 'hamer_ckpts' / 'checkpoints' / 'hamer.ckpt').write_bytes(b'not a checkpoint' * 100)
    archive = _tarball(tmp_path / 'garbage.tar.gz', garbage)
    with pytest.raises(ValueError, match='hamer_ckpts/checkpoints/hamer.ckpt does not pass verification'
                       ) as error:
        weights.install(archive, data_dir, log=lambda _: None)
    assert 'left as it was' in str(error.value) and '.setup-weights.partial' not in str(error.value)
    _assert_unchanged(data_dir, files)
    # Into an empty folder the garbage is not installed either; a good archive still installs over a good one.
    with pytest.raises(ValueError, match='does not pass verification'):
        weights.install(archive, tmp_path / 'empty', log=lambda _: None)
    assert not (tmp_path / 'empty' / 'hamer_ckpts').exists()
    assert len(weights.install(_tarball(tmp_path / 'good.tar.gz', small_with_mano), data_dir,
                               log=lambda _: None)) == len(files)
    _assert_unchanged(data_dir, files)
