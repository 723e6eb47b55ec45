#!/usr/bin/env python3
"""Where int8's error comes from: quantise one group of layers at a time and measure the deviation from fp32.

    python benchmarks/study_int8.py [--data-dir DIR] [--threads 2] [--only NAME ...]

Each row loads a fresh copy of the network (memory-mapped: cheap), quantises only that row's layers (PyTorch's
dynamic int8, as `precision='int8'`: weights per output channel, activations per tensor per call), runs the
evaluation crops of precision_cases.py (public fixture crop + real-photo hand crops) and prints the max
|difference| from our fp32 on the same crops, and the median time of 2 batch-1 forwards (fp32 timed in the
same run, for the ratio). The patch embedding is a convolution, which PyTorch's dynamic quantisation does not
cover: its row simulates int8 (weights quantised per channel and activations per tensor, then dequantised, in
float32), which measures the sensitivity but not a speed. The last rows are the mixes the study led to; the
one `precision='int8'` uses is `hamer_ros.hamer.model.INT8_PLAN`. Uses the seed-1 fixture weights unless
--data-dir has a checkpoint (random fixture weights may magnify the error compared with trained ones).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from precision_cases import MEASURES, deviation, evaluation_crops  # noqa: E402


def groups(network):
    """Row name -> (Linears to quantise, Linears to put in bf16, simulate the patch embedding, 8-bit activations).
    The single-group rows use 8-bit activations (what precision 'int8' uses on VNNI CPUs)."""
    from hamer_ros.hamer.network import bf16_linears, int8_linears

    every = list(int8_linears(network))
    depth = len(network.backbone.blocks)
    quarter = depth // 4

    def blocks(first, last):
        return [n for n in every if first <= int(n.split('.')[2]) <= last]

    head = [n for n in bf16_linears(network) if n.startswith('mano_head.')]
    rows = {'all ViT Linears int8, 7-bit activations (before this study)': (every, [], False, False),
            'all ViT Linears int8, 8-bit activations': (every, [], False, True)}
    for kind in ('qkv', 'proj', 'fc1', 'fc2'):
        rows[f'only {kind} (all blocks)'] = (list(int8_linears(network, (kind,))), [], False, True)
    for start in range(0, depth, quarter):
        rows[f'only blocks {start}-{start + quarter - 1}'] = (blocks(start, start + quarter - 1), [], False, True)
    rows['only the head decoder Linears'] = (head, [], False, True)
    rows['only the patch embedding (simulated)'] = ([], [], True, True)
    # Mixes: the sensitive layers (see docs/performance.md) in bf16, the rest int8.
    from hamer_ros.hamer.model import int8_plan
    for label, (int8_names, bf16_names) in int8_plan(network, all_plans=True).items():
        rows[f'mix: {label}'] = (int8_names, bf16_names, False, True)
    return rows


def simulate_int8_patch_embedding(network):
    import torch
    conv = network.backbone.patch_embed.proj
    with torch.no_grad():
        weight = conv.weight.detach().clone()
        scale = weight.abs().amax(dim=(1, 2, 3)) / 127
        conv.weight = torch.nn.Parameter(torch.fake_quantize_per_channel_affine(
            weight, scale, torch.zeros_like(scale, dtype=torch.int32), 0, -128, 127), requires_grad=False)

    def quantise_input(module, inputs):
        x = inputs[0]
        low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        scale = max(high - low, 1e-8) / 255
        return (torch.fake_quantize_per_tensor_affine(x, scale, int(round(-low / scale)), 0, 255),)
    conv.register_forward_pre_hook(quantise_input)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-dir', type=Path, default=None)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--reference', type=Path, help='public_crop_case.npz (default: '
                        'test/data/public_crop_case.npz)')
    parser.add_argument('--only', nargs='+', help='rows whose name contains one of these words')
    args = parser.parse_args()
    from hamer_ros.runtime_tuning import tune_process
    tune_process()

    import numpy as np
    import torch
    from bench_hamer import default_data_dir
    from hamer_ros import cpu_info
    from hamer_ros.hamer import checkpoint as ckpt_io
    from hamer_ros.hamer import mano as mano_lib
    from hamer_ros.hamer.model import HamerModel
    from hamer_ros.hamer.network import quantize_int8_

    torch.set_num_threads(args.threads)
    data_dir = args.data_dir or default_data_dir()
    files = ckpt_io.resolve_data_files(data_dir)
    settings = ckpt_io.read_model_config(files.model_config)

    def fresh_model(label):
        loaded = ckpt_io.read_checkpoint(files.checkpoint)
        network = ckpt_io.load_network(loaded, settings.network, settings.source)
        mano = mano_lib.mano_from_state_dict(loaded.state_dict, source=str(files.checkpoint)) \
            or mano_lib.load_mano_pkl(files.mano_pkl)
        return HamerModel(network, mano, settings, 'cpu', 'fp32', args.threads, label)

    def timed(model, crop):
        model.forward_crops(crop)
        times = []
        for _ in range(2):
            start = time.perf_counter()
            model.forward_crops(crop)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    model, flags = cpu_info.cpu_description()
    print(f'CPU: {model}; flags: {cpu_info.relevant_flags(flags)}; {args.threads} threads; data: {data_dir}')
    print(f'load average before: {os.getloadavg()}')
    fp32 = fresh_model('fp32')
    sets, missing = evaluation_crops(fp32, args.reference)
    for reason in missing:
        print(f'  (left out: {reason})')
    crops = np.concatenate(list(sets.values()))
    print(f'{len(crops)} crops: ' + ', '.join(f'{name} ({len(c)})' for name, c in sets.items()))
    reference = fp32.forward_crops(crops)
    fp32_time = timed(fp32, crops[:1])
    print(f'fp32 batch 1: {fp32_time * 1e3:.0f} ms')
    rows = groups(fp32.core.network)
    del fp32

    names = list(MEASURES) + ['depth (%)']
    table = []
    for label, (int8_names, bf16_names, patch, full_range) in rows.items():
        if args.only and not any(word in label for word in args.only):
            continue
        model = fresh_model(label)
        if patch:
            simulate_int8_patch_embedding(model.core.network)
        quantize_int8_(model.core.network, int8_names, bf16_names, full_range)
        error = deviation(model.forward_crops(crops), reference)
        seconds = timed(model, crops[:1])
        table.append([label, str(len(int8_names)), str(len(bf16_names))] + [f'{error[n]:.3g}' for n in names]
                     + [f'{seconds * 1e3:.0f}', f'{fp32_time / seconds:.2f}x'])
        print('  ' + ' | '.join(table[-1]), flush=True)
        del model
    header = ['layers in int8', '# int8', '# bf16'] + names + ['batch 1 ms', 'vs fp32']
    print(f'\nmax |difference| from fp32 over {len(crops)} crops; load average after: {os.getloadavg()}')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for row in table:
        print('| ' + ' | '.join(row) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
