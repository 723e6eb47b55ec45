#!/usr/bin/env python3
"""Peak memory of `python -m hamer_ros infer` on a long hand-free video: frames without a hand must not pile up
waiting for a batch of HaMeR crops.

A synthetic 640x480 MJPG video (textured frames, each with its number drawn) is run with a boxes file that gives no
hand on any frame (`{"*": []}`) and --landmarks-only (no model is loaded, so the figure is the frames' cost alone),
--overlay none, in a child process; its peak resident memory (ru_maxrss) is reported. `--code DIR` runs another
checkout of hamer_ros (e.g. an older commit exported with `git archive`) on the same video, for comparison.

    python benchmarks/bench_infer_memory.py [--frames 3000] [--code DIR ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    from hamer_ros.cpu_info import cpu_description

    return cpu_description()[0]


def hand_free_video(path: Path, frames: int) -> Path:
    sys.path.insert(0, str(ROOT / 'test'))
    from offline_helpers import write_numbered_video

    return write_numbered_video(path, 'MJPG', frames, size=(640, 480))


def peak_rss_mb(code: Path, video: Path, boxes: Path, out: Path):
    """(peak RSS in MB, seconds, frames recorded) of one infer run with the hamer_ros of `code`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), os.environ.get('PYTHONPATH', '')]))
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, '-m', 'hamer_ros', 'infer', str(video), '--out', str(out), '--boxes',
                                str(boxes), '--landmarks-only', '--overlay', 'none', '--quiet'], env=env, cwd=code,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f'infer with {code} failed: {process.stderr.read().decode()[-2000:]}')
    frames = json.loads((out / 'summary.json').read_text())['frames']
    return usage.ru_maxrss / 1024, seconds, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', type=int, default=3000)
    parser.add_argument('--code', type=Path, action='append', help='hamer_ros checkout(s) to run (default: this one)')
    args = parser.parse_args()
    print(f'CPU: {cpu_model()} ({os.cpu_count()} cores); load average {os.getloadavg()[0]:.2f}')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = hand_free_video(tmp / 'no_hands.avi', args.frames)
        boxes = tmp / 'boxes.json'
        boxes.write_text('{"*": []}')
        print(f'input: {args.frames} hand-free frames, 640x480 MJPG ({video.stat().st_size / 1e6:.1f} MB)')
        for i, code in enumerate(args.code or [ROOT]):
            rss, seconds, frames = peak_rss_mb(code.resolve(), video, boxes, tmp / f'out{i}')
            print(f'{code}: peak RSS {rss:.0f} MB, {frames} frames recorded, {seconds:.1f} s')


if __name__ == '__main__':
    main()
