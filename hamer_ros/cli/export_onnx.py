"""`python -m hamer_ros export-onnx --out hamer.onnx`: the HaMeR network (+ MANO and the crop camera) as ONNX.

Input `crops` (batch, 3, 256, 256): crops normalized as hamer_ros.hamer.preprocess.make_crops makes them (the
batch is dynamic). Outputs: pred_cam, pred_cam_t, global_orient, hand_pose, betas, pred_vertices,
pred_keypoints_3d, pred_keypoints_2d (hamer_ros.io.onnx_export). The full model's 2.5 GB of weights go to
`<out>.data` beside the graph (ONNX external data): keep the two files together.

The graph is always float32: the model is loaded on the CPU in fp32. The other commands' fp16/bf16 (CUDA
autocast) and int8 (PyTorch's dynamic quantisation) are run-time modes of PyTorch, not part of the weights; to
run the ONNX file in lower precision, convert or quantise it with onnxruntime's own tools.

Afterwards the file is checked with onnxruntime against PyTorch on random crops (batch 1 and 3): the maximum
differences are printed, and the exit status is 1 when one exceeds --tolerance (relative to the output's
largest value).
"""
from __future__ import annotations

from pathlib import Path

from hamer_ros.errors import SetupError


def add_arguments(parser) -> None:
    parser.epilog = ('The exported graph is float32 (loaded on the CPU in fp32): --precision fp16/bf16/int8 of '
                     'predict/infer/live are PyTorch run-time modes and are not exported.')
    parser.add_argument('--out', type=Path, required=True, help='the .onnx file to write')
    parser.add_argument('--data-dir', type=Path, help='HaMeR data folder (default: HAMER_ROS_DATA_DIR or '
                        '~/.local/share/hamer_ros/_DATA)')
    parser.add_argument('--checkpoint', type=Path, help='hamer.ckpt, instead of the one in the data folder')
    parser.add_argument('--mano', type=Path, help='MANO_RIGHT.pkl (only when the checkpoint has no MANO)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (default 17)')
    parser.add_argument('--no-check', action='store_true', help='skip the onnxruntime comparison')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest accepted difference relative to each output\'s largest value (default 1e-4)')


def run(args) -> int:
    import time

    from hamer_ros.io import onnx_export
    from hamer_ros.hamer.model import HamerModel

    try:
        import onnx  # noqa: F401 - checked here for a clear message
    except ImportError:
        raise SetupError('export-onnx needs the onnx package: pip install onnx onnxruntime') from None
    model = HamerModel.load(args.data_dir, args.checkpoint, args.mano, device='cpu')
    print(f'exporting {model.describe()}')
    start = time.perf_counter()
    path = onnx_export.export(model, args.out, opset=args.opset)
    data = path.with_name(path.name + '.data')
    size = path.stat().st_size + (data.stat().st_size if data.exists() else 0)
    print(f'wrote {path}' + (f' + {data.name} (external weights)' if data.exists() else '') +
          f', {size / 1e6:.1f} MB, in {time.perf_counter() - start:.1f} s')
    if args.no_check:
        return 0
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SetupError('checking the export needs onnxruntime: pip install onnxruntime (or pass --no-check)') \
            from None
    differences = onnx_export.compare(path, model)
    print(f'onnxruntime vs PyTorch on random crops, batch 1 and 3:\n  {"output":<18} {"max abs diff":>13} '
          f'{"relative":>10}')
    for name, (absolute, relative) in differences.items():
        print(f'  {name:<18} {absolute:>13.3g} {relative:>10.3g}')
    worst = max(relative for _, relative in differences.values())
    if worst > args.tolerance:
        print(f'FAILED: relative difference {worst:.3g} > --tolerance {args.tolerance:g}')
        return 1
    print(f'OK: every output within {args.tolerance:g} of PyTorch (relative)')
    return 0
