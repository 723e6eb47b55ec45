"""scripts/env.sh: a shell for using hamer_ros, sourced the way a user does; the ROS domain is the user's."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _domain_after_sourcing(exported):
    if not (ROOT / 'build' / 'ws' / 'install' / 'setup.bash').exists():
        pytest.skip('the colcon workspace is not built: run scripts/setup_env.sh')
    env = {k: v for k, v in os.environ.items() if k != 'ROS_DOMAIN_ID'}
    if exported is not None:
        env['ROS_DOMAIN_ID'] = exported
    result = subprocess.run(['bash', '-c', f'. {ROOT / "scripts" / "env.sh"} && echo "${{ROS_DOMAIN_ID-unset}}"'],
                            env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_an_exported_domain_wins_and_none_is_made_up():
    assert _domain_after_sourcing('17') == '17'
    # Two terminals that sourced it must see each other: no random domain per shell.
    assert {_domain_after_sourcing(None) for _ in range(3)} == {'unset'}

