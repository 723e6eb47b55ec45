"""The layout's rule: only hamer_ros/ros/ talks to ROS. Everything else (the core, offline I/O, provisioning, the
command line) imports no rclpy, directly or through another module, so it runs and is tested without a ROS graph."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'hamer_ros'
ROS_SHELL = PACKAGE / 'ros'


def _modules_outside_the_ros_shell():
    for path in sorted(PACKAGE.rglob('*.py')):
        if ROS_SHELL in path.parents:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
        yield path, '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_no_rclpy_import_outside_the_ros_shell():
    offenders = [f'{path.relative_to(PACKAGE.parent)} imports {name}'
                 for path, _ in _modules_outside_the_ros_shell() for name in _imported_modules(path)
                 if name == 'rclpy' or name.startswith('rclpy.')]
    assert offenders == []


def test_every_module_outside_the_ros_shell_imports_with_rclpy_unavailable():
    """Also what they import on the way: with `import rclpy` made to fail, each module still imports."""
    names = [name for _, name in _modules_outside_the_ros_shell() if not name.endswith('__main__')]
    code = ('import importlib, sys\n'
            'sys.modules["rclpy"] = None\n'          # `import rclpy` now raises ImportError
            'failed = []\n'
            f'for name in {names!r}:\n'
            '    try:\n'
            '        importlib.import_module(name)\n'
            '    except ImportError as exc:\n'
            '        failed.append(f"{name}: {exc}")\n'
            'print("\\n".join(failed))\n'
            'sys.exit(1 if failed else 0)\n')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stdout + done.stderr
