#!/usr/bin/env python3
"""What crafted or damaged model files cost the loaders: time to the answer and peak memory, one process each.

Each case is built in a temporary folder, then loaded in a fresh Python process (so that the peak RSS is that
case's own: the process imports torch, ~0.2-0.3 GB, before anything is read). The time is that of the load call
alone. Cases: checkpoints whose pickle is a shared-reference bomb (a list holding the previous level twice, 40
levels: 2^40 leaves once expanded), a self-referential list, a 200 000-deep list, a STACK_GLOBAL call of
os.system, and a Lightning-style checkpoint with extra classes outside state_dict (loads, with a warning);
model_config.yaml with DEPTH 100000000, a 9-level alias bomb (10^9 values expanded) and FOCAL_LENGTH -5000;
MANO_RIGHT.pkl with an object-dtype v_template and NaN posedirs; and, for scale, a normal small checkpoint.

    python benchmarks/bench_crafted_files.py

Prints one row per case: the answer (the error's first words, or "loaded"), seconds, peak RSS.
"""
from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'test'))


def _small_state_dict():
    import torch
    return {'backbone.pos_embed': torch.zeros(1, 3, 8), 'mano_head.init_cam': torch.zeros(1, 3)}


def _with_pickle(path: Path, pickled: bytes) -> Path:
    import zipfile

    import torch
    plain = path.with_suffix('.plain')
    torch.save({'state_dict': {}}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, 'w') as target:
        for info in source.infolist():
            target.writestr(info.filename, pickled if info.filename.endswith('/data.pkl') else source.read(info))
    plain.unlink()
    return path


def build(folder: Path) -> dict:
    """Writes every case; returns name -> (loader, path)."""
    import numpy as np
    import torch

    import fixture_weights

    def short(text):
        return b'\x8c' + bytes([len(text)]) + text.encode()

    cases = {}
    bomb = []
    for _ in range(40):
        bomb = [bomb, bomb]
    torch.save({'state_dict': _small_state_dict(), 'hyper_parameters': {'x': bomb}}, folder / 'memo_bomb.ckpt')
    cases['checkpoint: shared-reference bomb, 40 levels'] = ('checkpoint', folder / 'memo_bomb.ckpt')
    itself = []
    itself.append(itself)
    torch.save({'state_dict': _small_state_dict(), 'hyper_parameters': {'x': itself}}, folder / 'self.ckpt')
    cases['checkpoint: self-referential list'] = ('checkpoint', folder / 'self.ckpt')
    depth = 200_000
    _with_pickle(folder / 'deep.ckpt', b'\x80\x02}(' + short('state_dict') + b'}' + short('hyper_parameters')
                 + b']' * depth + b'a' * (depth - 1) + b'u.')
    cases['checkpoint: list 200 000 deep'] = ('checkpoint', folder / 'deep.ckpt')
    _with_pickle(folder / 'stack_global.ckpt', b'\x80\x04' + short('os') + b'\x94' + short('system') + b'\x94\x93'
                 + short('true') + b'\x85R.')
    cases['checkpoint: STACK_GLOBAL os.system'] = ('checkpoint', folder / 'stack_global.ckpt')
    from pathlib import PurePosixPath
    torch.save({'state_dict': _small_state_dict(), 'hyper_parameters': {'lr': np.float64(1e-5),
                'out': PurePosixPath('/runs'), 'mean': np.arange(3.0)}}, folder / 'extras.ckpt')
    cases['checkpoint: numpy + pathlib outside state_dict'] = ('checkpoint', folder / 'extras.ckpt')
    torch.save({'state_dict': _small_state_dict()}, folder / 'normal.ckpt')
    cases['checkpoint: normal (small)'] = ('checkpoint', folder / 'normal.ckpt')

    released = fixture_weights.MODEL_CONFIG_YAML
    configs = {
        'DEPTH: 100000000': released.replace('    TYPE: vit\n', '    TYPE: vit\n    DEPTH: 100000000\n'),
        'alias bomb, 9 levels': 'a: &a [x, x, x, x, x, x, x, x, x, x]\n' + ''.join(
            f'{chr(98 + i)}: &{chr(98 + i)} [' + ', '.join([f'*{chr(97 + i)}'] * 10) + ']\n' for i in range(8))
        + 'MODEL:\n  IMAGE_MEAN: *i\n',
        'FOCAL_LENGTH: -5000': released.replace('FOCAL_LENGTH: 5000', 'FOCAL_LENGTH: -5000'),
        'released': released,
    }
    for index, (name, text) in enumerate(configs.items()):
        path = folder / f'config{index}' / 'model_config.yaml'
        path.parent.mkdir()
        path.write_text(text)
        cases[f'model_config.yaml: {name}'] = ('config', path)

    mano, _ = fixture_weights.make_mano(1)
    changed = {'object-dtype v_template': ('v_template', np.array([{'x': 1}] * 2334, dtype=object).reshape(778, 3)),
               'NaN in posedirs': ('posedirs', np.where(np.arange(mano['posedirs'].size).reshape(
                   mano['posedirs'].shape) == 7, np.nan, mano['posedirs'])),
               'synthetic seed 1': (None, None)}
    for index, (name, (key, value)) in enumerate(changed.items()):
        content = dict(mano)
        if key:
            content[key] = value
        path = folder / f'mano{index}' / 'MANO_RIGHT.pkl'
        path.parent.mkdir()
        path.write_bytes(pickle.dumps(content, protocol=2))
        cases[f'MANO_RIGHT.pkl: {name}'] = ('mano', path)
    return cases


def load_one(kind: str, path: str) -> dict:
    import warnings

    from hamer_ros.hamer import checkpoint, mano
    loader = {'checkpoint': checkpoint.read_checkpoint, 'config': checkpoint.read_model_config,
              'mano': mano.load_mano_pkl}[kind]
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            loader(path)
            answer = 'loaded' + (' + warning' if caught else '')
        except Exception as exc:   # noqa: BLE001 - the answer is what is measured
            answer = f'{type(exc).__name__}: {str(exc).replace(str(path), "<file>")[:70]}'
    seconds = time.perf_counter() - start
    return {'answer': answer, 'seconds': seconds,
            'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def cpu_model() -> str:
    from hamer_ros.cpu_info import cpu_description

    return cpu_description()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--one', nargs=2, metavar=('KIND', 'PATH'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(load_one(*args.one)))
        return 0
    print(f'# crafted model files: time to the loader\'s answer and peak RSS of a fresh process; {cpu_model()}')
    print(f'{"case":<50} {"seconds":>8} {"peak RSS":>9}  answer')
    with tempfile.TemporaryDirectory() as tmp:
        for name, (kind, path) in build(Path(tmp)).items():
            out = subprocess.run([sys.executable, __file__, '--one', kind, str(path)], capture_output=True, text=True,
                                 timeout=600)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f'{name:<50} {row["seconds"]:>8.3f} {row["rss_mb"]:>6.0f} MB  {row["answer"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
