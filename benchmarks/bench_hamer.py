#!/usr/bin/env python3
"""HaMeR: checkpoint load time, per-crop forward latency, peak RSS, achieved FLOP rate, and the other precisions.

    python benchmarks/bench_hamer.py [--data-dir DIR] [--threads 2] [--batches 1 2 8] [--repeats 5]
                                     [--precisions fp32 int8] [--device cpu|cuda] [--compile]

Uses the real `_DATA` folder when it holds a checkpoint, else the seed-1 fixture weights (same shapes, same
cost). Latency: `HamerModel.forward_crops` (network + MANO + crop camera) on random crops, one warm-up, then
`--repeats` timed runs; median and spread (min-max). Load time and peak RSS (ru_maxrss) are measured in fresh
child processes doing load + one forward, so nothing of this process counts (page cache warm: the file was
read before). FLOPs are counted analytically (`NetworkConfig.flops_per_crop`, checked against PyTorch's
FlopCounterMode in test_hamer_network.py). Peak = cores x FLOP/cycle x clock: 64 fp32 FLOP/cycle/core with
AVX-512 (2 FMA pipes x 16 lanes x 2, e.g. Zen 5 / Xeon), else 32 (AVX2); the clock from --clock-ghz, lscpu's max
MHz, or else measured with a small C probe (a dependent add chain retires one add per cycle). Yardstick: the official code on this CPU (hamer_reference/README.md §4).

Precisions (CPU: fp32, int8; CUDA: fp32 with TF32 off, bf16, fp16): each gets its latency rows, its speed-up
over fp32 and its deviation on the public fixture crop (public_crop_case.npz, seed 1: the official fp32 outputs)
from the official outputs and from our fp32: max |difference| of vertices and 3D keypoints (m), rotation-matrix
entries (global_orient and hand_pose) and the camera translation. int8 counts as fp32-equivalent GFLOP/s.
--device cuda: the same on the GPU (not run on this machine: no GPU here); --compile adds torch.compile with CUDA
graphs. The process is tuned as the node and the CLI are (hamer_ros.runtime_tuning: sleeping OpenMP threads, glibc
malloc thresholds) unless --no-process-tuning.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OFFICIAL = {'forward batch 1 (s/crop)': '3.2 best (3.2-7.4)', 'forward batch 2 (s/crop)': '2.7 best (2.7-6.0)',
            'load (s)': '2-5 torch.load + 6-9 constructor', 'peak RSS (GB)': '~5.5'}


def default_data_dir() -> Path:
    from hamer_ros.provisioning import paths
    from hamer_ros.hamer.checkpoint import CHECKPOINT_IN_DATA_DIR
    real = paths.data_dir()
    return real if (real / CHECKPOINT_IN_DATA_DIR).is_file() else paths.test_data_dir() / 'fixtures' / 'seed1' / '_DATA'


# A chain of dependent integer adds retires one add per cycle, so adds per CPU-second (thread CPU time: immune to
# other jobs preempting us) = the core clock. Needed because this VM's lscpu reports no max clock and
# /proc/cpuinfo shows the 2.6 GHz TSC rate, not the clock the cores run at.
CLOCK_PROBE_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec a, b; unsigned long x = 0, n = 400000000UL;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (unsigned long i = 0; i < n; i++)
        __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    printf("%f\n", 4.0 * n / ((b.tv_sec - a.tv_sec) + 1e-9 * (b.tv_nsec - a.tv_nsec)) / 1e9);
    return x == 0;
}
"""


def measured_clock_ghz():
    """Best of 3 runs of the add-chain probe, or None without a C compiler."""
    import shutil
    import tempfile
    compiler = shutil.which('cc') or shutil.which('gcc')
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        source, binary = Path(folder, 'probe.c'), Path(folder, 'probe')
        source.write_text(CLOCK_PROBE_C)
        if subprocess.run([compiler, '-O1', str(source), '-o', str(binary)], capture_output=True).returncode:
            return None
        return max(float(subprocess.run([str(binary)], capture_output=True, text=True).stdout) for _ in range(3))


def cpu_peak_gflops(cores: int, clock_ghz=None):
    """(peak GFLOP/s, explanation): cores x FLOP/cycle x clock."""
    text = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
    max_mhz = re.search(r'CPU max MHz:\s*([\d.]+)', text)
    if clock_ghz is not None:
        source = 'given'
    elif max_mhz:
        clock_ghz, source = float(max_mhz.group(1)) / 1000, 'lscpu max MHz'
    else:
        clock_ghz, source = measured_clock_ghz(), 'measured: dependent-add chain, 1 add/cycle'
        if clock_ghz is None:
            found = re.search(r'cpu MHz\s*:\s*([\d.]+)', Path('/proc/cpuinfo').read_text())
            clock_ghz, source = float(found.group(1)) / 1000, '/proc/cpuinfo (may be the base clock)'
    avx512 = 'avx512f' in text
    per_cycle = 64 if avx512 else 32
    model = re.search(r'Model name:\s*(.+)', text)
    explanation = (f'{cores} cores x {per_cycle} FLOP/cycle '
                   f'({"AVX-512: 2 FMA pipes x 16 fp32 lanes x 2" if avx512 else "AVX2: 2 FMA pipes x 8 x 2"}) x '
                   f'{clock_ghz:.2f} GHz ({source}; {model.group(1).strip() if model else "cpu"})')
    return cores * per_cycle * clock_ghz, explanation


def child(args) -> None:
    """Load + one forward in a fresh process; prints a JSON line."""
    start = time.perf_counter()
    if not args.no_process_tuning:
        from hamer_ros.runtime_tuning import tune_process
        tune_process()
    import numpy as np
    import torch
    from hamer_ros.hamer.model import HamerModel
    imported = time.perf_counter()
    model = HamerModel.load(args.data_dir, device=args.device, precision=args.child_precision, threads=args.threads)
    loaded = time.perf_counter()
    crops = np.random.default_rng(0).normal(size=(args.child_batch, 3, 256, 256)).astype(np.float32)
    model.forward_crops(crops)
    done = time.perf_counter()
    print(json.dumps({'import_s': imported - start, 'load_s': loaded - imported, 'first_forward_s': done - loaded,
                      'maxrss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2,
                      'threads': torch.get_num_threads()}))


def run_child(args, batch, precision='fp32'):
    command = [sys.executable, __file__, '--child', '--child-batch', str(batch), '--data-dir', str(args.data_dir),
               '--child-precision', precision, '--device', args.device]
    if args.threads:
        command += ['--threads', str(args.threads)]
    if args.no_process_tuning:
        command.append('--no-process-tuning')
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# What the fixture comparison reports: name -> the output keys it covers (max |difference| over them).
DEVIATIONS = {'vertices (m)': ('pred_vertices',), 'keypoints 3D (m)': ('pred_keypoints_3d',),
              'rotations': ('global_orient', 'hand_pose'), 'pred_cam_t': ('pred_cam_t',)}


def deviation(outputs, reference):
    import numpy as np
    return {name: max(float(np.abs(np.asarray(outputs[k], np.float64) - reference[k]).max()) for k in keys)
            for name, keys in DEVIATIONS.items()}


def print_table(header, rows):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print('  '.join(str(c).ljust(w) for c, w in zip(row, widths)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-dir', type=Path, default=None)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: PyTorch default)')
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 2, 8])
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per batch size (batch 8: half)')
    parser.add_argument('--children', type=int, default=3, help='fresh processes for load time / peak RSS')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--precisions', nargs='+', choices=('fp32', 'int8', 'bf16', 'fp16'),
                        help='default: fp32 int8 on cpu, fp32 bf16 fp16 on cuda (fp32 always runs first)')
    parser.add_argument('--compile', action='store_true', help='torch.compile (CUDA graphs on cuda) for all precisions')
    parser.add_argument('--reference', type=Path, help='public_crop_case.npz (default: test/data/public_crop_case.npz)')
    parser.add_argument('--no-process-tuning', action='store_true',
                        help="spinning OpenMP threads and glibc malloc's default thresholds")
    parser.add_argument('--clock-ghz', type=float, help='core clock for the peak (default: lscpu, else measured)')
    parser.add_argument('--aten-linear', action='store_true',
                        help="also time batch 1 with PyTorch's default (MKL) linear instead of oneDNN")
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--child-batch', type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument('--child-precision', default='fp32', help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data_dir = args.data_dir or default_data_dir()
    if args.child:
        child(args)
        return 0
    if not args.no_process_tuning:
        from hamer_ros.runtime_tuning import tune_process
        tune_process()

    import numpy as np
    import torch
    from hamer_ros.hamer import network as network_module
    from hamer_ros.hamer.model import HamerModel

    precisions = ['fp32'] + [p for p in (args.precisions or (['int8'] if args.device == 'cpu' else ['bf16', 'fp16']))
                             if p != 'fp32']
    reference_file = args.reference or ROOT / 'test' / 'data' / 'public_crop_case.npz'
    case = dict(np.load(reference_file)) if reference_file.is_file() else None
    print(f'data: {args.data_dir}')
    children = [run_child(args, 1) for _ in range(args.children)] + [run_child(args, 2)]
    extra_children = {p: run_child(args, 1, p) for p in precisions[1:]}
    cores = os.cpu_count()
    peak, peak_text = cpu_peak_gflops(cores, args.clock_ghz)
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    rows, medians, deviations = [], {}, []
    fp32_outputs = None

    for precision in precisions:
        model = HamerModel.load(args.data_dir, device=args.device, precision=precision, threads=args.threads,
                                compile=args.compile)
        print(model.describe())
        flops = model.core.network.config.flops_per_crop()

        def time_batches(batch, repeats, label):
            crops = rng.normal(size=(batch, 3, 256, 256)).astype(np.float32)
            for _ in range(3 if args.compile else 1):   # warm-up: weights paged in; compilation / graph capture
                model.forward_crops(crops)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model.forward_crops(crops)
                times.append(time.perf_counter() - start)
            per_crop = [t / batch for t in times]
            median = statistics.median(per_crop)
            medians.setdefault((precision, batch), median)   # the first row per precision and batch: the default path
            speedup = medians[('fp32', batch)] / median
            # % of the fp32 FMA peak only for fp32 on the CPU; int8 rows count fp32-equivalent FLOPs.
            of_peak = f'{100 * flops / median / 1e9 / peak:.0f}%' if args.device == 'cpu' and precision == 'fp32' else '-'
            rows.append((label, f'{median * 1e3:.1f}', f'{min(per_crop) * 1e3:.1f}-{max(per_crop) * 1e3:.1f}',
                         f'{median * batch * 1e3:.1f}', f'{speedup:.2f}x', f'{flops / median / 1e9:.0f}', of_peak,
                         f'{flops / min(per_crop) / 1e9:.0f}'))

        for batch in args.batches:
            time_batches(batch, max(2, args.repeats // 2) if batch >= 8 else args.repeats,
                         f'{precision} batch {batch}')
        if args.aten_linear and precision == 'fp32' and args.device == 'cpu':
            network_module._ONEDNN_LINEAR = False
            time_batches(1, args.repeats, 'fp32 batch 1, MKL linear')
            network_module._ONEDNN_LINEAR = True
        if case is not None:
            outputs = model.forward_crops(case['img'])
            if precision == 'fp32':
                fp32_outputs = outputs
            deviations.append((precision, deviation(outputs, case), deviation(outputs, fp32_outputs)))
        del model

    print(f'\nforward on {args.device} ({torch.get_num_threads()} CPU threads, {flops / 1e9:.1f} GFLOP per crop'
          f'{", torch.compile" if args.compile else ""})')
    print_table(('', 'median ms/crop', 'min-max ms/crop', 'median ms/batch', 'vs fp32', 'GFLOP/s (median)',
                 '% of peak', 'GFLOP/s (best)'), rows)
    if args.device == 'cpu':
        print(f'peak: {peak:.0f} GFLOP/s = {peak_text}')
    print(f'machine load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} '
          f'on {cores} cores (other jobs stretch the median; the best run is the uncontended figure)')
    if deviations:
        print(f'\ndeviation on the public fixture crop ({reference_file.name}): max |difference|, '
              'vs the official fp32 outputs / vs our fp32')
        print_table(['precision'] + list(DEVIATIONS),
                    [[p] + [f'{official[n]:.2g} / {ours[n]:.2g}' for n in DEVIATIONS]
                     for p, official, ours in deviations])
        print('  (test/data/README.md tolerances for fp32: vertices/keypoints 2e-6 m, rotations 1e-5)')

    loads = [c['load_s'] for c in children]
    rss = [c['maxrss_gb'] for c in children]
    print(f'\nload + first forward in fresh processes ({len(children)} runs, {children[0]["threads"]} threads)')
    print(f'  HamerModel.load: median {statistics.median(loads):.3f} s (min {min(loads):.3f}, max {max(loads):.3f})')
    print(f'  first forward batch 1 (page-faults the weights in): median '
          f'{statistics.median(c["first_forward_s"] for c in children[:-1]):.2f} s')
    print(f'  peak RSS load + forward: batch 1 median {statistics.median(rss[:-1]):.2f} GB, batch 2 {rss[-1]:.2f} GB')
    for precision, result in extra_children.items():
        print(f'  {precision}: load {result["load_s"]:.2f} s (incl. quantisation/conversion), first forward '
              f'{result["first_forward_s"]:.2f} s, peak RSS {result["maxrss_gb"]:.2f} GB')
    print(f'  import torch + hamer_ros: median {statistics.median(c["import_s"] for c in children):.2f} s')
    print('\nofficial code on this CPU (hamer_reference/README.md §4):')
    for name, value in OFFICIAL.items():
        print(f'  {name}: {value}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
