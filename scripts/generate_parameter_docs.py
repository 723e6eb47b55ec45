#!/usr/bin/env python3
"""Writes config/hamer.yaml and the README's parameter table from the node's parameter table
(hamer_ros/ros/parameters.py). `--check`: writes nothing, exits 1 when either committed file differs.

    python scripts/generate_parameter_docs.py [--check]
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hamer_ros.ros.parameters import render_yaml, replace_readme_table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='exit 1 when a committed file is out of date')
    args = parser.parse_args()
    config, readme = ROOT / 'config' / 'hamer.yaml', ROOT / 'README.md'
    wanted = {config: render_yaml(), readme: replace_readme_table(readme.read_text())}
    stale = [path for path, text in wanted.items() if path.read_text() != text]
    if args.check:
        for path in stale:
            print(f'{path.relative_to(ROOT)} is out of date: run python scripts/generate_parameter_docs.py',
                  file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path])
        print(f'wrote {path.relative_to(ROOT)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
