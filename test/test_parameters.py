"""The node's parameter table (hamer_ros/ros/parameters.py) is the one source of its parameters: config/hamer.yaml
and the README's table are generated from it (scripts/generate_parameter_docs.py), and the committed files must be
what the script writes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hamer_ros.ros import parameters
from hamer_ros.ros.parameters import PARAMETERS, check_value, defaults, render_readme_table, render_yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts' / 'generate_parameter_docs.py'


def _flatten(tree: dict, prefix: str = '') -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def test_committed_config_and_readme_are_what_the_script_generates():
    assert (ROOT / 'config' / 'hamer.yaml').read_text() == render_yaml(), \
        'config/hamer.yaml is out of date: python scripts/generate_parameter_docs.py'
    readme = (ROOT / 'README.md').read_text()
    assert render_readme_table() in readme, 'README.md parameter table is out of date: ' \
                                            'python scripts/generate_parameter_docs.py'
    done = subprocess.run([sys.executable, str(SCRIPT), '--check'], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_generated_yaml_holds_every_default_under_ros__parameters():
    config = yaml.safe_load(render_yaml())
    assert list(config) == ['/**']
    assert _flatten(config['/**']['ros__parameters']) == defaults()
    # Every parameter has a comment: the read-only ones are marked.
    body = render_yaml().split('ros__parameters:\n', 1)[1]
    assert body.count('(ro)') == sum(p.read_only for p in PARAMETERS)


def test_readme_table_has_a_row_per_parameter_with_default_range_and_read_only():
    rows = [line for line in render_readme_table().splitlines() if line.startswith('| `')]
    assert [row.split('`')[1] for row in rows] == [p.name for p in PARAMETERS]
    by_name = {row.split('`')[1]: [cell.strip() for cell in row.split(' | ')] for row in rows}
    assert by_name['precision'][1:4] == ['`fp32`', 'fp32 \\| fp16 \\| bf16 \\| int8', 'yes']
    assert by_name['detector.min_tracking_confidence'][1:4] == ['`0.5`', '0.01..1', '']
    assert by_name['data_dir'][1] == "`''`"


def test_stale_files_make_the_check_fail_and_the_script_rewrites_them(tmp_path):
    """A copy of the repository's generated files with a changed default: --check exits 1 naming both files;
    without --check the script writes them back to what the table says."""
    (tmp_path / 'scripts').mkdir()
    (tmp_path / 'config').mkdir()
    shutil.copy(SCRIPT, tmp_path / 'scripts')
    os.symlink(ROOT / 'hamer_ros', tmp_path / 'hamer_ros')
    config = (ROOT / 'config' / 'hamer.yaml').read_text()
    readme = (ROOT / 'README.md').read_text()
    (tmp_path / 'config' / 'hamer.yaml').write_text(config.replace('qos_depth: 5', 'qos_depth: 6'))
    (tmp_path / 'README.md').write_text(readme.replace('| `qos_depth` | `5` |', '| `qos_depth` | `6` |'))
    script = tmp_path / 'scripts' / SCRIPT.name
    done = subprocess.run([sys.executable, str(script), '--check'], capture_output=True, text=True)
    assert done.returncode == 1
    assert 'config/hamer.yaml is out of date' in done.stderr and 'README.md is out of date' in done.stderr
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    assert (tmp_path / 'config' / 'hamer.yaml').read_text() == config
    assert (tmp_path / 'README.md').read_text() == readme


def test_table_rows_are_consistent():
    names = [p.name for p in PARAMETERS]
    assert len(names) == len(set(names))
    # The YAML nests a group's parameters: each group appears once.
    group_names = [group for group, _ in parameters.groups() if group]
    assert len(group_names) == len(set(group_names))
    for param in PARAMETERS:
        assert len(param.description) > 15, f'{param.name} needs a description'
        assert (param.low is None) == (param.high is None), param.name
        if param.low is not None:
            assert param.low <= param.default <= param.high, param.name
        if param.choices:
            assert param.default in param.choices, param.name
        assert check_value(param.name, param.default) is None, param.name


@pytest.mark.parametrize('name,value,words', [
    ('precision', 'int4', "precision must be one of fp32, fp16, bf16, int8, got 'int4'"),
    ('markers.color_left', [0.1, 0.2], 'must be three numbers in [0, 1]'),
    ('markers.color_right', [0.1, 0.2, 1.5], 'must be three numbers in [0, 1]'),
    ('frame_prefix', 'hand _', 'must not contain spaces'),
    ('frame_prefix', '{ns}hand_', 'only use the placeholder {namespace}'),
])
def test_values_beyond_type_and_range_are_refused_with_the_reason(name, value, words):
    assert words in check_value(name, value)
