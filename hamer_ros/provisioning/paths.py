"""Where hamer_ros looks for and keeps its files (all overridable by environment variables).

| what | default | override |
|---|---|---|
| HaMeR data (`_DATA` layout: hamer_ckpts/, data/mano/) | `~/.local/share/hamer_ros/_DATA` | `HAMER_ROS_DATA_DIR` (node: `data_dir`) |
| cache (MediaPipe model, sample images) | `~/.cache/hamer_ros` | `HAMER_ROS_CACHE_DIR` |
| test data (fixture weights, photos) | `<cache>/test-data` | `HAMER_ROS_TEST_DATA` |

`XDG_DATA_HOME` / `XDG_CACHE_HOME` replace `~/.local/share` / `~/.cache` when set.
"""
from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def data_dir() -> Path:
    """Default HaMeR data folder (laid out like the official `_DATA`)."""
    env = os.environ.get('HAMER_ROS_DATA_DIR')
    return Path(env) if env else _xdg('XDG_DATA_HOME', '.local/share') / 'hamer_ros' / '_DATA'


def cache_dir() -> Path:
    env = os.environ.get('HAMER_ROS_CACHE_DIR')
    return Path(env) if env else _xdg('XDG_CACHE_HOME', '.cache') / 'hamer_ros'


def test_data_dir() -> Path:
    env = os.environ.get('HAMER_ROS_TEST_DATA')
    return Path(env) if env else cache_dir() / 'test-data'
