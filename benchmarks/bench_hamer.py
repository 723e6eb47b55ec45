#!/usr/bin/env python3
"""HaMeR forward per crop in fp32, bf16 and int8 side by side, their deviation from fp32, load time and memory.

    python benchmarks/bench_hamer.py [--threads 2] [--precisions fp32 bf16 int8] [--batches 1 2] [--repeats 5]
                                     [--children 1] [--device cpu|cuda] [--compile] [--data-dir DIR]

Everything printed is measured by this run, on this machine; nothing is quoted. Ratios ("vs fp32") divide
figures of the same run. Uses the real `_DATA` folder when it holds a checkpoint, else the seed-1 fixture
weights (same shapes, same cost).

- Machine: CPU model and the flags that matter (AVX-512, VNNI, native bf16, AMX), cores, PyTorch threads and the
  load average before and after (other jobs stretch the median; the best run is the least disturbed one).
- Matmul throughput: a 2048^3 fp32 matmul (and bf16 where the CPU has it natively), best of 5, with the
  benchmark's threads: the fp32 FMA throughput this CPU actually reaches, the yardstick for "% of fp32 matmul".
- Forward latency: `HamerModel.forward_crops` (network + MANO + crop camera) on random crops. All precisions
  are loaded at once and timed in interleaved rounds (each round: every precision, every batch size), so a
  change in machine load hits all of them alike. One warm-up each, then --repeats rounds; median and min-max
  per crop of wall time, and the median process CPU time per crop (all threads; it does not grow while other
  jobs hold the cores, so its ratio is the steadier one on a loaded machine). FLOPs are counted analytically
  (`NetworkConfig.flops_per_crop`); bf16/int8 rows count the same FLOPs (fp32-equivalent).
- Deviation from our fp32, on the same crops (benchmarks/precision_cases.py): the public fixture crop and
  real-photo hand crops; max |difference| of vertices, 3D keypoints, rotation-matrix entries, 2D keypoints (px
  of the 256-px crop) and relative depth. fp32 is also compared with the official code's outputs for the
  fixture crop (public_crop_case.npz; seed-1 weights only).
- Load and memory: each precision once more in --children fresh processes: HamerModel.load (memory-mapped
  checkpoint, plus the bf16 conversion / int8 quantisation), the first forward (pages the weights in) and the
  peak RSS (VmHWM) of load + one batch-1 forward.

CPU precisions: fp32 (exact), bf16 (needs AMX or AVX512_BF16; elsewhere HamerModel falls back to fp32 and
this prints so), int8. --device cuda: fp32 (TF32 off), bf16, fp16 autocast; --compile adds torch.compile. The
process is tuned as the node and the CLI are (hamer_ros.runtime_tuning) unless --no-process-tuning.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from precision_cases import MEASURES, deviation, evaluation_crops, reference_file  # noqa: E402


def default_data_dir() -> Path:
    from hamer_ros.provisioning import paths
    from hamer_ros.hamer.checkpoint import CHECKPOINT_IN_DATA_DIR
    real = paths.data_dir()
    return real if (real / CHECKPOINT_IN_DATA_DIR).is_file() else paths.test_data_dir() / 'fixtures' / 'seed1' / '_DATA'


def matmul_gflops(dtype, device: str, size: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of a size^3 matmul in `dtype` (2 size^3 FLOPs: one multiply-add = 2)."""
    import torch
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    torch.mm(a, b)
    sync()
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def peak_rss_gb() -> float:
    """This process's peak resident memory: VmHWM, which belongs to the process's own address space. (ru_maxrss
    would do, except that Linux carries it over exec from the forking parent: a child started by a benchmark that
    holds 5 GB would report at least 5 GB.)"""
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


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
    model.forward_crops(np.random.default_rng(0).normal(size=(1, 3, 256, 256)).astype(np.float32))
    done = time.perf_counter()
    print(json.dumps({'import_s': imported - start, 'load_s': loaded - imported, 'first_forward_s': done - loaded,
                      'maxrss_gb': peak_rss_gb(),
                      'threads': torch.get_num_threads(), 'precision': model.precision}))


def run_child(args, precision):
    command = [sys.executable, __file__, '--child', '--data-dir', str(args.data_dir),
               '--child-precision', precision, '--device', args.device]
    if args.threads:
        command += ['--threads', str(args.threads)]
    if args.no_process_tuning:
        command.append('--no-process-tuning')
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f'child for {precision} failed:\n{done.stderr[-2000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(header, rows):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print('  '.join(str(c).ljust(w) for c, w in zip(row, widths)))


def describe_machine(device: str) -> str:
    import torch
    from hamer_ros import cpu_info
    model, flags = cpu_info.cpu_description()
    text = (f'CPU: {model}, {os.cpu_count()} cores visible, flags: {cpu_info.relevant_flags(flags)} '
            f'(native bf16: {cpu_info.native_bf16(flags) or "no"}); {platform.system()} {platform.release()}; '
            f'torch {torch.__version__}, {torch.get_num_threads()} threads')
    if device == 'cuda':
        text += f'; GPU: {torch.cuda.get_device_name()}'
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-dir', type=Path, default=None)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: PyTorch default)')
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds (each: every precision and batch)')
    parser.add_argument('--children', type=int, default=1, help='fresh processes per precision for load time and '
                        'peak RSS (0: skip)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--precisions', nargs='+', choices=('fp32', 'bf16', 'int8', 'fp16'),
                        help='default: fp32 bf16 int8 on cpu, fp32 bf16 fp16 on cuda (fp32 always runs: the '
                        'reference)')
    parser.add_argument('--compile', action='store_true', help='torch.compile (CUDA graphs on cuda) for all precisions')
    parser.add_argument('--reference', type=Path, help='public_crop_case.npz (default: test/data/public_crop_case.npz)')
    parser.add_argument('--no-process-tuning', action='store_true',
                        help="spinning OpenMP threads and glibc malloc's default thresholds")
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
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
    from hamer_ros import cpu_info
    from hamer_ros.hamer.model import HamerModel

    if args.threads:
        torch.set_num_threads(args.threads)
    default = ['bf16', 'int8'] if args.device == 'cpu' else ['bf16', 'fp16']
    precisions = ['fp32'] + [p for p in (args.precisions or default) if p != 'fp32']
    print(f'data: {args.data_dir}')
    print(describe_machine(args.device))
    load_before = os.getloadavg()
    print(f'load average (1/5/15 min) before: {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}')

    device = args.device
    throughput = {'fp32': matmul_gflops(torch.float32, device)}
    if device == 'cuda' or cpu_info.native_bf16():
        throughput['bf16'] = matmul_gflops(torch.bfloat16, device)
    print('matmul 2048^3, best of 5: ' + ', '.join(f'{d} {g:.0f} GFLOP/s' for d, g in throughput.items()))

    models, load_s = {}, {}
    for precision in precisions:
        start = time.perf_counter()
        models[precision] = HamerModel.load(args.data_dir, device=device, precision=precision,
                                            threads=args.threads, compile=args.compile)
        load_s[precision] = time.perf_counter() - start
        print(f'{precision}: {models[precision].describe()} (load {load_s[precision]:.2f} s)')
    flops = models['fp32'].core.network.config.flops_per_crop()

    rng = np.random.default_rng(0)
    inputs = {batch: rng.normal(size=(batch, 3, 256, 256)).astype(np.float32) for batch in args.batches}
    for model in models.values():   # warm-up: pages the weights in; compilation / graph capture
        for batch in args.batches:
            for _ in range(3 if args.compile else 1):
                model.forward_crops(inputs[batch])
    times = {(p, b): [] for p in precisions for b in args.batches}
    cpu_times = {(p, b): [] for p in precisions for b in args.batches}
    for _ in range(args.repeats):
        for precision, model in models.items():
            for batch in args.batches:
                start, start_cpu = time.perf_counter(), time.process_time()
                model.forward_crops(inputs[batch])
                times[(precision, batch)].append((time.perf_counter() - start) / batch)
                cpu_times[(precision, batch)].append((time.process_time() - start_cpu) / batch)
    load_after = os.getloadavg()

    rows = []
    for (precision, batch), per_crop in times.items():
        median = statistics.median(per_crop)
        ran_as = models[precision].precision
        label = precision if ran_as == precision else f'{precision} (ran as {ran_as})'
        yardstick = throughput.get('fp32')
        cpu_median = statistics.median(cpu_times[(precision, batch)])
        rows.append((label, batch, f'{median * 1e3:.1f}', f'{min(per_crop) * 1e3:.1f}-{max(per_crop) * 1e3:.1f}',
                     f'{statistics.median(times[("fp32", batch)]) / median:.2f}x',
                     f'{min(times[("fp32", batch)]) / min(per_crop):.2f}x',
                     f'{cpu_median * 1e3:.0f}', f'{statistics.median(cpu_times[("fp32", batch)]) / cpu_median:.2f}x',
                     f'{flops / median / 1e9:.0f}', f'{100 * flops / median / 1e9 / yardstick:.0f} %'))
    print(f'\nforward on {device}, {flops / 1e9:.1f} GFLOP per crop, {torch.get_num_threads()} threads, '
          f'{args.repeats} interleaved rounds{", torch.compile" if args.compile else ""}')
    print_table(('precision', 'batch', 'median ms/crop', 'min-max', 'vs fp32 (median)', 'vs fp32 (best)',
                 'CPU ms/crop', 'vs fp32 (CPU time)', 'GFLOP/s', '% of fp32 matmul'), rows)
    print('  CPU ms: process CPU time (all threads) per crop, median: unlike wall time it does not grow while other '
          'jobs hold the cores, so on a loaded machine its ratio is the steadier one')
    print(f'load average (1/5/15 min) during: before {load_before[0]:.2f}, after {load_after[0]:.2f} / '
          f'{load_after[1]:.2f} / {load_after[2]:.2f} on {os.cpu_count()} cores')

    sets, missing = evaluation_crops(models['fp32'], args.reference)
    fp32_outputs = {name: models['fp32'].forward_crops(crops) for name, crops in sets.items()}
    measures = list(MEASURES) + ['depth (%)']
    deviation_rows = []
    case_path = reference_file(args.reference)
    if 'public fixture crop' in sets and 'seed1' in str(args.data_dir):
        official = dict(np.load(case_path))
        found = deviation(fp32_outputs['public fixture crop'], official)
        deviation_rows.append(['fp32 vs the official code', 'public fixture crop'] + [f'{found[m]:.2g}'
                                                                                       for m in measures])
    for precision in precisions[1:]:
        for name, crops in sets.items():
            found = deviation(models[precision].forward_crops(crops), fp32_outputs[name])
            deviation_rows.append([f'{precision} vs our fp32', f'{name} ({len(crops)})'] + [f'{found[m]:.3g}'
                                                                                            for m in measures])
    if deviation_rows:
        print('\ndeviation, max |difference| over the crops')
        print_table(['precision', 'crops'] + measures, deviation_rows)
    for reason in missing:
        print(f'  (left out: {reason})')

    if args.children:
        print(f'\nload + first forward in fresh processes ({args.children} per precision, batch 1)')
        for precision in precisions:
            results = [run_child(args, precision) for _ in range(args.children)]
            print(f'  {precision}: HamerModel.load {statistics.median(r["load_s"] for r in results):.2f} s '
                  f'(incl. conversion), first forward {statistics.median(r["first_forward_s"] for r in results):.2f}'
                  f' s, peak RSS {statistics.median(r["maxrss_gb"] for r in results):.2f} GB, import '
                  f'{statistics.median(r["import_s"] for r in results):.2f} s (ran as {results[0]["precision"]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
