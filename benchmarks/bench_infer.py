#!/usr/bin/env python3
"""Per-frame time of `python -m hamer_ros infer` on a real sequence (the demo's frames from the bus_man_both photo,
640x480, two hands), by configuration: landmarks-only, the small random model, and the full-size network (the
seed-1 fixture weights: ViT-H, same cost as the released model) with hands batched across frames.

Time per frame = detection + tracking + the frame's share of the batched HaMeR forward (+ landmarks placement),
from the records' `timings_ms`; rendering and file writing are not included. Prints median and spread.

    python benchmarks/bench_infer.py [--frames 12] [--full-frames 6] [--skip-full]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _frames(folder: Path, count: int) -> Path:
    import cv2

    from hamer_ros.provisioning import sample_data
    from offline_helpers import demo_module

    folder.mkdir(parents=True, exist_ok=True)
    photo = cv2.imread(str(sample_data.fetch('bus_man_both')))
    for index, frame in enumerate(demo_module().make_sequence(photo, 30)[:count]):
        cv2.imwrite(str(folder / f'{index:03d}.png'), frame)
    return folder


def _run(frames: Path, out: Path, extra) -> dict:
    from hamer_ros.cli import main

    code = main(['infer', str(frames), '--out', str(out), '--sequence', '--overlay', 'none', '--quiet',
                 '--threads', '2', *extra])
    if code != 0:
        raise RuntimeError(f'infer failed ({code}) with {extra}')
    records = [json.loads(p.read_text()) for p in sorted((out / 'results').glob('*.json'))]
    per_frame = np.array([sum(r['timings_ms'].values()) for r in records])
    model = np.array([r['timings_ms'].get('model_ms', r['timings_ms'].get('landmarks_ms', 0.0)) for r in records])
    return {'frames': len(records), 'hands': sum(len(r['hands']) for r in records), 'per_frame': per_frame,
            'model': model}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=12, help='frames for the cheap configurations')
    parser.add_argument('--full-frames', type=int, default=6, help='frames for the full-size network')
    parser.add_argument('--skip-full', action='store_true', help='leave out the full-size network')
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / 'test'))
    from hamer_test_files import write_small_data_dir
    from hamer_ros.provisioning import paths

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = _frames(tmp / 'frames', max(args.frames, args.full_frames))
        small = write_small_data_dir(tmp / 'small' / '_DATA')
        configs = [('landmarks-only (MediaPipe)', ['--landmarks-only'], args.frames),
                   ('small random model, batch 4', ['--data-dir', str(small), '--batch-size', '4'], args.frames)]
        fixture = paths.test_data_dir() / 'fixtures' / 'seed1' / '_DATA'
        if not args.skip_full:
            if not (fixture / 'hamer_ckpts' / 'checkpoints' / 'hamer.ckpt').is_file():
                print(f'no seed-1 fixture weights at {fixture}: run scripts/prepare_test_data.py (or --skip-full)')
                return 2
            for batch in (1, 2, 4):
                configs.append((f'full ViT-H, batch {batch} crops', ['--data-dir', str(fixture), '--batch-size',
                                                                     str(batch)], args.full_frames))
        rows = []
        for name, extra, count in configs:
            subset = tmp / f'frames_{count}'
            if not subset.exists():
                subset.mkdir()
                for path in sorted(frames.iterdir())[:count]:
                    (subset / path.name).symlink_to(path)
            result = _run(subset, tmp / f'out_{len(rows)}', extra)
            rows.append((name, result))
            print(f'.. {name}: done', file=sys.stderr, flush=True)
    print(f'\ninfer, 640x480 frames of the bus_man_both sequence, 2 CPU threads; ms per frame '
          f'(detect + track + share of the batched forward)')
    print(f'{"configuration":<32} {"frames":>6} {"hands":>5} {"median":>8} {"p10":>8} {"p90":>8} {"model median":>13}')
    for name, r in rows:
        p10, p50, p90 = np.percentile(r['per_frame'], [10, 50, 90])
        print(f'{name:<32} {r["frames"]:>6} {r["hands"]:>5} {p50:>8.0f} {p10:>8.0f} {p90:>8.0f} '
              f'{np.median(r["model"]):>13.0f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
