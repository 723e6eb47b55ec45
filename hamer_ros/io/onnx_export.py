"""HaMeR to ONNX: normalized crops (batch, 3, 256, 256) in; MANO parameters, vertices, joints and camera out.

The exported graph is `hamer.model.HamerCore` (network + MANO + crop camera), so its outputs are the official
`HAMER.forward` ones in the crop frame (mirrored for left hands, like the network sees them): `pred_cam`,
`pred_cam_t`, `global_orient` (B,1,3,3), `hand_pose` (B,15,3,3), `betas`, `pred_vertices` (B,778,3),
`pred_keypoints_3d` (B,21,3), `pred_keypoints_2d` (normalized crop units). The batch dimension is dynamic.

Exporter: PyTorch's TorchScript-based `torch.onnx.export(dynamo=False)`. The dynamo exporter needs the
`onnxscript` package, which nothing else here uses; the traced graph has no data-dependent control flow, and
`check` proves the result on batch sizes other than the traced one.

Size: the full model has 2.5 GB of weights, above protobuf's 2 GB limit for one file, so its weights go to
`<name>.onnx.data` beside the graph (ONNX external data; keep both files together). onnxruntime loads them.
"""
from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from hamer_ros.errors import InputError

OUTPUT_NAMES = ('pred_cam', 'pred_cam_t', 'global_orient', 'hand_pose', 'betas', 'pred_vertices',
                'pred_keypoints_3d', 'pred_keypoints_2d')
INPUT_NAME = 'crops'
# One protobuf file holds at most 2 GB; leave room for the graph itself.
_SINGLE_FILE_LIMIT = 1_800_000_000


class _ExportedOutputs(torch.nn.Module):
    """HamerCore with its dict outputs as a tuple in OUTPUT_NAMES order (ONNX graphs have positional outputs)."""

    def __init__(self, core):
        super().__init__()
        self.core = core

    def forward(self, crops: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outputs = self.core(crops)
        return tuple(outputs[name] for name in OUTPUT_NAMES)


def export(model, path, opset: int = 17, trace_batch: int = 2) -> Path:
    """Write `model` (a `HamerModel`, fp32) as ONNX to `path`; weights over ~1.8 GB go to `<path>.data`."""
    import onnx

    path = Path(path)
    if path.suffix != '.onnx':
        raise InputError(f'the output file must end in .onnx, got {path}')
    module = _ExportedOutputs(model.core).eval().to('cpu')
    example = torch.zeros(trace_batch, 3, model.settings.image_size, model.settings.image_size)
    weight_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix='.onnx-export-') as folder:
        exported = Path(folder) / path.name
        dynamic = {name: {0: 'batch'} for name in (INPUT_NAME, *OUTPUT_NAMES)}
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about Python values taken from tensors: the q/k/v split over a fixed size-3 axis
            # and smplx's `max(betas.shape[0], pose.shape[0])`, which returns a traced size; `compare` runs
            # batch sizes other than the traced one to prove the graph right. Constant-folding notes: noise.
            warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
            warnings.filterwarnings('ignore', message='Constant folding')
            warnings.filterwarnings('ignore', message='You are using the legacy TorchScript-based ONNX export')
            torch.onnx.export(module, (example,), str(exported), dynamo=False, input_names=[INPUT_NAME],
                              output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic, opset_version=opset,
                              do_constant_folding=True)
        data = path.with_name(path.name + '.data')
        data.unlink(missing_ok=True)
        if weight_bytes > _SINGLE_FILE_LIMIT or len(list(Path(folder).iterdir())) > 1:
            # The exporter scatters big models into one file per tensor: gather them into one data file.
            graph = onnx.load(str(exported), load_external_data=True)
            onnx.save_model(graph, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data.name, size_threshold=1024)
            data.chmod(path.stat().st_mode & 0o777)      # onnx creates it owner-only; match the graph file
        else:
            shutil.move(str(exported), str(path))
    onnx.checker.check_model(str(path))      # by path: works with external data too
    return path


def compare(path, model, batch_sizes: Sequence[int] = (1, 3), seed: int = 0) -> Dict[str, Tuple[float, float]]:
    """Runs the ONNX file with onnxruntime and `model` with PyTorch on the same random crops, for each batch
    size; returns {output: (max abs difference, max difference / max |PyTorch value|)} over all of them."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    size = model.settings.image_size
    rng = np.random.default_rng(seed)
    worst = {name: (0.0, 0.0) for name in OUTPUT_NAMES}
    for batch in batch_sizes:
        crops = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        expected = model.forward_crops(crops)
        got = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: crops})))
        for name in OUTPUT_NAMES:
            if got[name].shape != expected[name].shape:
                raise RuntimeError(f'ONNX output {name} has shape {got[name].shape} for batch {batch}, PyTorch '
                                   f'{expected[name].shape}: the batch dimension did not stay dynamic')
            difference = float(np.abs(got[name] - expected[name]).max())
            relative = difference / max(float(np.abs(expected[name]).max()), 1e-12)
            worst[name] = (max(worst[name][0], difference), max(worst[name][1], relative))
    return worst
