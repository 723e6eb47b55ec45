"""The hand landmarker model: a user's file checked, the project's own built from the 0.10.21 wheel, hashed,
cached atomically, rebuilt when damaged, and clear errors for everything else."""
import hashlib
import os
import zipfile

import pytest

from hamer_ros.detection import model as detection_model
from hamer_ros.detection import ensure_hand_landmarker_model

MEMBERS = tuple(detection_model.HAND_LANDMARKER_MEMBERS)


def _member_hashes(bundle_path):
    if not zipfile.is_zipfile(bundle_path):
        return None
    with zipfile.ZipFile(bundle_path) as bundle:
        return {name: hashlib.sha256(bundle.read(name)).hexdigest() for name in bundle.namelist()}


def _expected_hashes():
    return {member: sha for member, (_, sha) in detection_model.HAND_LANDMARKER_MEMBERS.items()}


@pytest.fixture(scope='module')
def mediapipe_wheel():
    """The real mediapipe 0.10.21 wheel, fetched once by provisioning the default model."""
    ensure_hand_landmarker_model()
    wheels = sorted(detection_model.model_cache_dir().glob('mediapipe-0.10.21-*.whl'))
    assert wheels, 'provisioning kept no wheel in the cache'
    return wheels[0]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('HAMER_ROS_CACHE_DIR', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


@pytest.fixture
def cache_with_wheel(empty_cache, mediapipe_wheel):
    """A fresh cache that already holds the wheel, so rebuilding needs no network."""
    folder = empty_cache / 'mediapipe'
    folder.mkdir(parents=True)
    (folder / mediapipe_wheel.name).symlink_to(mediapipe_wheel)
    return empty_cache


# ---- a user's path -------------------------------------------------------------------------------------------

def test_missing_user_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'does not exist: give the path of a hand_landmarker\.task'):
        ensure_hand_landmarker_model(tmp_path / 'nowhere.task')


def test_user_file_that_is_no_zip_is_refused(tmp_path):
    bogus = tmp_path / 'hand_landmarker.task'
    bogus.write_bytes(b'this is not a zip archive' * 10)
    with pytest.raises(ValueError, match='is not a readable zip bundle'):
        ensure_hand_landmarker_model(bogus)


def test_truncated_user_zip_is_refused(tmp_path):
    good = tmp_path / 'good.task'
    with zipfile.ZipFile(good, 'w') as bundle:
        for member in MEMBERS:
            bundle.writestr(member, os.urandom(4096))
    truncated = tmp_path / 'truncated.task'
    truncated.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(ValueError, match='not a readable zip bundle'):
        ensure_hand_landmarker_model(truncated)


def test_user_zip_without_the_landmark_model_names_what_is_missing(tmp_path):
    partial = tmp_path / 'partial.task'
    with zipfile.ZipFile(partial, 'w') as bundle:
        bundle.writestr('hand_detector.tflite', b'x')
    with pytest.raises(ValueError, match=r'lacks hand_landmarks_detector\.tflite'):
        ensure_hand_landmarker_model(partial)


def test_user_bundle_is_used_as_given_without_hash_pinning(tmp_path, empty_cache):
    # Another valid bundle (e.g. Google's) has other hashes: only its layout is checked, nothing is built.
    user = tmp_path / 'mine.task'
    with zipfile.ZipFile(user, 'w') as bundle:
        for member in MEMBERS:
            bundle.writestr(member, b'other model bytes')
    assert ensure_hand_landmarker_model(str(user)) == user
    assert not (empty_cache / 'mediapipe').exists()


# ---- the project's own bundle ----------------------------------------------------------------------------------

@pytest.mark.mediapipe
def test_default_model_is_built_with_the_recorded_member_hashes(cache_with_wheel):
    path = ensure_hand_landmarker_model()
    assert path == cache_with_wheel / 'mediapipe' / 'hand_landmarker.task'
    assert _member_hashes(path) == _expected_hashes()
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    # No temporary file is left next to it.
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith('.')) == []


@pytest.mark.mediapipe
def test_cached_bundle_is_reused(cache_with_wheel):
    path = ensure_hand_landmarker_model()
    first_mtime = path.stat().st_mtime_ns
    assert ensure_hand_landmarker_model() == path
    assert path.stat().st_mtime_ns == first_mtime


@pytest.mark.mediapipe
@pytest.mark.parametrize('damage', ['garbage', 'tampered_member', 'missing_member'])
def test_damaged_cached_bundle_is_rebuilt(cache_with_wheel, damage):
    path = ensure_hand_landmarker_model()
    if damage == 'garbage':
        path.write_bytes(b'\0' * 1000)
    else:
        with zipfile.ZipFile(path, 'w') as bundle:
            bundle.writestr('hand_detector.tflite', b'not the palm detector')
            if damage == 'tampered_member':
                bundle.writestr('hand_landmarks_detector.tflite', b'not the landmark model')
    assert _member_hashes(path) != _expected_hashes()
    assert ensure_hand_landmarker_model() == path
    assert _member_hashes(path) == _expected_hashes()


@pytest.mark.mediapipe
def test_the_built_bundle_loads_in_the_tasks_api(cache_with_wheel):
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.HandLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(
        ensure_hand_landmarker_model())), num_hands=2)
    with vision.HandLandmarker.create_from_options(options) as landmarker:
        assert landmarker is not None


def test_a_wrong_wheel_is_a_clear_error(tmp_path, empty_cache):
    folder = empty_cache / 'mediapipe'
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / 'mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl', 'w') as wheel:
        wheel.writestr('mediapipe/__init__.py', '')
    with pytest.raises(RuntimeError, match='is not the mediapipe==0.10.21 wheel'):
        ensure_hand_landmarker_model()
    assert not (folder / 'hand_landmarker.task').exists()


def test_a_wheel_with_other_model_bytes_is_refused(tmp_path, empty_cache):
    folder = empty_cache / 'mediapipe'
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / 'mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl', 'w') as wheel:
        for source, _ in detection_model.HAND_LANDMARKER_MEMBERS.values():
            wheel.writestr(source, b'some other model')
    with pytest.raises(RuntimeError, match='unexpected SHA-256'):
        ensure_hand_landmarker_model()
    assert not (folder / 'hand_landmarker.task').exists()


def test_unreachable_package_index_is_a_clear_error(empty_cache, monkeypatch):
    # Point pip at nothing: no config files, no local wheel folders, an index on a closed port.
    for name, value in {'PIP_CONFIG_FILE': os.devnull, 'PIP_INDEX_URL': 'http://127.0.0.1:9/simple',
                        'PIP_EXTRA_INDEX_URL': '', 'PIP_FIND_LINKS': '', 'PIP_NO_INDEX': '',
                        'PIP_RETRIES': '0', 'PIP_TIMEOUT': '2', 'PIP_DEFAULT_TIMEOUT': '2'}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError, match=r'(?s)could not fetch mediapipe==0\.10\.21 with pip.*hand_landmarker\.task'):
        ensure_hand_landmarker_model()
    assert list((empty_cache / 'mediapipe').iterdir()) == []


@pytest.mark.mediapipe
@pytest.mark.parametrize('state', ['missing', 'damaged'])
def test_without_provisioning_a_missing_or_damaged_model_names_the_fix_and_fetches_nothing(cache_with_wheel, state):
    """What the node asks for: no building, no fetching while it runs, the set-up command in the error."""
    folder = cache_with_wheel / 'mediapipe'
    if state == 'damaged':
        (folder / 'hand_landmarker.task').write_bytes(b'\0' * 100)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(detection_model.ModelNotProvisioned, match=r'python -m hamer_ros check --provision'):
        ensure_hand_landmarker_model(provision=False)
    assert sorted(p.name for p in folder.iterdir()) == before
    # Once provisioned, the same call just returns it.
    path = ensure_hand_landmarker_model()
    assert ensure_hand_landmarker_model(provision=False) == path


def test_a_pip_that_does_not_answer_is_stopped(tmp_path, monkeypatch):
    """pip download has a time limit: a hung index cannot hold the caller forever."""
    import sys

    from hamer_ros.provisioning import package_files

    hung = tmp_path / 'hung_python'
    hung.write_text('#!/bin/sh\nsleep 30\n')
    hung.chmod(0o755)
    monkeypatch.setattr(sys, 'executable', str(hung))
    with pytest.raises(RuntimeError, match='no answer within 1 s'):
        package_files.pip_download('mediapipe==0.10.21', tmp_path / 'out', timeout_s=1.0)
