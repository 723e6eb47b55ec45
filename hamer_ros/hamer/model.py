"""HaMeR inference: image + hand boxes -> MANO meshes in the camera frame (the plain-Python core, no rclpy).

`HamerModel.load()` reads the official files (``hamer_ros.hamer.checkpoint``), `predict()` crops every hand of an
image (``preprocess.make_crops``), runs them in one batch through the network (``network.HamerNetwork``) and MANO
(``mano.ManoLayer``), and places each hand in the camera (`hands_in_camera`).

Placement (`perspective_correction`): ``on`` rotates each crop's prediction by the rotation taking the optical
axis to the ray through the crop centre (``camera.crop_to_camera_perspective``, docs/geometry.md): right for a
real camera, where a crop at the image edge looks ~28 deg off axis. ``off`` is the official placement
(``camera.cam_crop_to_full``: translation only), reproducing the official numbers. ``auto`` (default): ``on`` for
intrinsics from a CameraInfo, ``off`` for HaMeR's default camera (whose crops are all within ~2 deg of the axis).

Left hands (docs/model.md §7): the network only ever sees right hands — a left hand is cropped from the mirrored image —
so its raw outputs live in that mirrored frame. `predict` returns left hands as left hands in the image frame:
x of vertices and keypoints negated, rotations ``M R M`` with ``M = diag(-1, 1, 1)``, and ``tx`` negated
before `cam_crop_to_full`, as the official demo does. ``pred_cam`` is kept raw (mirrored frame).

Precision: ``fp32`` (reference; on CUDA with TensorFloat-32 off, docs/model.md §8), ``bf16``/``fp16`` (CUDA autocast:
the network in half precision, MANO and the camera in float32), ``bf16`` on the CPU (the ViT's and the head
decoder's Linear weights converted to bfloat16 once at load, `network.to_bfloat16_`; only on CPUs with native
bf16 — AMX or AVX512_BF16 — elsewhere a warning and fp32), ``int8`` (CPU: dynamic quantisation of the
transformer Linears, `network.quantize_int8_`). The default stays fp32 everywhere: it matches the official
model; bf16 and int8 trade millimetres for speed (docs/performance.md).

CUDA: all hands of a call go through the network in one batch; crops are staged in a pinned host buffer that is
reused between calls (asynchronous upload), and all outputs come back in one device-to-host copy. `compile=True`
wraps the core in ``torch.compile`` (CUDA graphs via mode ``reduce-overhead`` on CUDA) with batches padded to a
power of two so only a few shapes are ever captured; off by default (see docs/performance.md for what was
verified where). Out of memory: the batch is split in halves until it fits (and later calls keep that limit);
when one crop still does not fit, the model moves to the CPU if `allow_cpu_fallback`, else the call raises a
RuntimeError saying what to do. Either way the model stays usable.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from hamer_ros.errors import InputError, MissingFileError, SetupError, file_errors_are_user_errors
from hamer_ros.hamer import checkpoint as ckpt_io
from hamer_ros.hamer import mano as mano_lib
from hamer_ros.hamer.camera import cam_crop_to_full, crop_to_camera_perspective, project_points
from hamer_ros.hamer.network import HamerNetwork, NetworkConfig, init_random_, quantize_int8_, to_bfloat16_
from hamer_ros.hamer.preprocess import IMAGE_MEAN_RGB, IMAGE_SIZE, IMAGE_STD_RGB, make_crops
from hamer_ros.types import CameraIntrinsics, HandDetection, HandReconstruction

log = logging.getLogger(__name__)

PRECISIONS = ('fp32', 'fp16', 'bf16', 'int8')
PERSPECTIVE_CORRECTIONS = ('auto', 'on', 'off')
AUTOCAST_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}   # CUDA only
CPU_PRECISIONS = ('fp32', 'bf16', 'int8')


# int8: which ViT Linears are quantised; the other ViT Linears run in bf16 where the CPU has it natively (else
# every ViT Linear is quantised, see int8_plan). From the per-layer study in docs/performance.md
# (benchmarks/study_int8.py): the deviation grows with every quantised layer (roughly in quadrature), most from qkv and proj and from the early
# blocks, whose errors the later blocks amplify. INT8_PLAN, the one precision 'int8' uses, quantises the most
# layers (half of the ViT's FLOPs) that kept the study's deviation under 2 mm.
INT8_PLANS = {   # label -> (kinds, first quantised block as a fraction of the depth; ViT-H: 32 blocks)
    'fc1 + fc2, all blocks': (('fc1', 'fc2'), 0.0),
    'fc2, all blocks': (('fc2',), 0.0),
    'fc1 + fc2, blocks 8-31': (('fc1', 'fc2'), 0.25),
    'fc1 + fc2, blocks 16-31': (('fc1', 'fc2'), 0.5),
    'all four, blocks 16-31': (('qkv', 'proj', 'fc1', 'fc2'), 0.5),
}
INT8_PLAN = 'all four, blocks 16-31'


def int8_plan(network, all_plans: bool = False):
    """(Linears to quantise, Linears to put in bf16) of `INT8_PLAN` — or of every plan, by label, with `all_plans`.
    Without native bf16 the layers kept out of int8 would stay float32 and int8 would gain little speed, so there
    every ViT Linear is quantised (the larger deviation of the study's first row)."""
    from hamer_ros import cpu_info
    from hamer_ros.hamer.network import int8_linears

    native = cpu_info.native_bf16() is not None
    depth = len(network.backbone.blocks)
    plans = {}
    for label, (kinds, start) in INT8_PLANS.items():
        quantised = [n for n in int8_linears(network, kinds) if int(n.split('.')[2]) >= round(start * depth)]
        kept = [n for n in int8_linears(network) if n not in quantised]
        plans[label] = (quantised, kept) if native else (list(int8_linears(network)), [])
    return plans if all_plans else plans[INT8_PLAN]


def cpu_bf16_problem() -> Optional[str]:
    """None when this CPU runs bf16 natively (AMX or AVX512_BF16), else why precision 'bf16' falls back to fp32."""
    from hamer_ros import cpu_info

    model, flags = cpu_info.cpu_description()
    if cpu_info.native_bf16(flags):
        return None
    return (f"precision 'bf16' on the CPU needs native bf16 instructions (AMX or AVX512_BF16), which this CPU "
            f"({model}) lacks: bf16 would be emulated, its error without its speed. Using fp32; for speed on this CPU use "
            "precision int8")


class HamerCore(nn.Module):
    """Normalized crops -> the outputs of the official ``HAMER.forward`` (docs/model.md §2-5), same names.

    A plain module (network + MANO + crop camera), so it can also be traced or exported.
    """

    def __init__(self, network: HamerNetwork, mano: mano_lib.ManoData, focal_length: float):
        super().__init__()
        self.network = network
        self.mano = mano_lib.ManoLayer(mano)
        self.focal_length = float(focal_length)

    def forward(self, crops: torch.Tensor, debug: Optional[Dict[str, torch.Tensor]] = None):
        image_size = self.network.config.image_size
        # MANO and the camera run in float32 whatever the network ran in (official hamer.py L128 `.float()`).
        global_orient, hand_pose, betas, pred_cam = (t.float() for t in self.network(crops, debug))
        hand = self.mano(global_orient, hand_pose, betas)
        batch = crops.shape[0]
        focal = torch.full((batch, 2), self.focal_length, dtype=torch.float32, device=crops.device)
        # Crop camera: depth from the weak-perspective scale (docs/model.md §5, hamer.py L114-139).
        pred_cam_t = torch.stack([pred_cam[:, 1], pred_cam[:, 2],
                                  2 * focal[:, 0] / (image_size * pred_cam[:, 0] + 1e-9)], dim=-1)
        points = hand['keypoints_3d'] + pred_cam_t[:, None]
        # Normalized crop coordinates: focal / image_size, principal point 0, divide first (geometry.py L64-102).
        keypoints_2d = points[..., :2] / points[..., 2:] * (focal[:, None] / image_size)
        return {
            'pred_cam': pred_cam, 'pred_cam_t': pred_cam_t, 'focal_length': focal,
            'global_orient': global_orient, 'hand_pose': hand_pose, 'betas': betas,
            'pred_vertices': hand['vertices'], 'pred_keypoints_3d': hand['keypoints_3d'],
            'pred_keypoints_2d': keypoints_2d, 'joint_rotations': hand['joint_rotations'],
        }


@dataclass
class BatchPrediction:
    """`predict_batch` output: the hands plus what went in and came out of the network (for tools/tests)."""
    hands: List[HandReconstruction]
    crops: np.ndarray                 # (N, 3, 256, 256) normalized network inputs
    raw: Dict[str, np.ndarray]        # `HamerCore` outputs (mirrored frame for left hands)
    intrinsics: CameraIntrinsics      # the camera cam_t and keypoints_2d refer to


def _resolve_device(device: Union[str, torch.device]) -> torch.device:
    if str(device) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SetupError(f'device {device} requested but CUDA is not available to this PyTorch; use cpu or auto')
    if device.type not in ('cpu', 'cuda'):
        raise InputError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {str(device)!r}")
    return device


class HamerModel:
    """HaMeR with its MANO model, on one device. Build with `load` (official files) or `small_random` (tests)."""

    def __init__(self, network: HamerNetwork, mano: mano_lib.ManoData,
                 settings: ckpt_io.ModelSettings = ckpt_io.ModelSettings(), device: Union[str, torch.device] = 'cpu',
                 precision: str = 'fp32', threads: Optional[int] = None, description: str = '',
                 allow_cpu_fallback: bool = False, compile: bool = False):
        if precision not in PRECISIONS:
            raise InputError(f'precision must be one of {sorted(PRECISIONS)}, got {precision!r}')
        self.device = _resolve_device(device)
        if precision not in CPU_PRECISIONS and self.device.type != 'cuda':
            raise InputError(f'precision {precision!r} is for CUDA devices; on {self.device} use fp32, bf16 or int8')
        if precision == 'int8' and self.device.type != 'cpu':
            raise InputError(f"precision 'int8' is the CPU's dynamic quantisation; on {self.device} use bf16 or fp16")
        if (tuple(settings.image_mean), tuple(settings.image_std)) != (IMAGE_MEAN_RGB, IMAGE_STD_RGB) \
                or settings.image_size != IMAGE_SIZE:
            raise ValueError(f'{settings.source}: image size/mean/std {settings.image_size}, {settings.image_mean}, '
                             f'{settings.image_std} differ from the released values the crops are made with '
                             f'({IMAGE_SIZE}, {IMAGE_MEAN_RGB}, {IMAGE_STD_RGB})')
        if threads is not None:
            if threads < 1:
                raise InputError(f'threads must be >= 1, got {threads}')
            torch.set_num_threads(threads)   # process-wide: PyTorch has one intra-op pool
        if self.device.type == 'cuda' and precision == 'fp32':
            # Reference-exact float32: no TensorFloat-32 matmuls/convolutions (docs/model.md §8).
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        if precision == 'bf16' and self.device.type == 'cpu':
            problem = cpu_bf16_problem()
            if problem:
                log.warning('%s', problem)
                precision = 'fp32'
            else:
                released = to_bfloat16_(network)
                log.info('HaMeR in bf16 on the CPU: ViT and head Linears converted (%.2f GB of fp32 checkpoint '
                         'pages given back)', released / 1e9)
        if precision == 'int8':
            quantize_int8_(network, *int8_plan(network))
        self.precision = precision
        self.settings = settings
        self.mano = mano
        self.allow_cpu_fallback = bool(allow_cpu_fallback)
        self.core = HamerCore(network, mano, settings.focal_length).eval().to(self.device)
        self._description = description
        self._compile = bool(compile)
        self._compiled_core = self._make_compiled_core() if compile else None
        self._max_batch: Optional[int] = None          # set after an out-of-memory error
        self._staging: Optional[torch.Tensor] = None   # pinned host buffer for CUDA uploads
        self.perspective_correction = 'auto'

    @property
    def perspective_correction(self) -> str:
        """'auto', 'on' or 'off': how crops are placed in the camera (module docstring)."""
        return self._perspective_correction

    @perspective_correction.setter
    def perspective_correction(self, value: str) -> None:
        if value not in PERSPECTIVE_CORRECTIONS:
            raise ValueError(f'perspective_correction must be one of {", ".join(PERSPECTIVE_CORRECTIONS)}, '
                             f'got {value!r}')
        self._perspective_correction = value

    def uses_perspective_correction(self, camera: CameraIntrinsics) -> bool:
        """Whether hands seen through `camera` are placed perspective-correctly (`perspective_correction`)."""
        if self._perspective_correction == 'auto':
            return bool(camera.from_camera_info)
        return self._perspective_correction == 'on'

    # ------------------------------------------------------------------------------------------- building

    @classmethod
    def load(cls, data_dir=None, checkpoint=None, mano=None, device: str = 'auto', precision: str = 'fp32',
             threads: Optional[int] = None, allow_cpu_fallback: bool = False, compile: bool = False) -> 'HamerModel':
        """The official model from a `_DATA`-style folder and/or explicit files (see ``checkpoint.py``).

        MANO comes from the checkpoint's ``mano.*`` buffers when it has them — in the official model they
        override MANO_RIGHT.pkl (docs/model.md §1.1) — otherwise from MANO_RIGHT.pkl.
        """
        with file_errors_are_user_errors():     # the loaders name the file and say what is wrong with it
            files = ckpt_io.resolve_data_files(data_dir, checkpoint, mano)
            settings = ckpt_io.read_model_config(files.model_config)
            loaded = ckpt_io.read_checkpoint(files.checkpoint)
            network = ckpt_io.load_network(loaded, settings.network, settings.source)
            mano_data = mano_lib.mano_from_state_dict(loaded.state_dict, source=str(files.checkpoint))
            if mano_data is None:
                if files.mano_pkl is None:
                    raise MissingFileError(f'{files.checkpoint} carries no MANO buffers and no MANO_RIGHT.pkl was '
                                           'found: put it at data/mano/MANO_RIGHT.pkl in the data folder or pass '
                                           '--mano')
                mano_data = mano_lib.load_mano_pkl(files.mano_pkl)
        description = (f'HaMeR from {files.checkpoint} (config: {settings.source}; MANO: {mano_data.source}; '
                       f'{len(loaded.skipped_keys)} training-only entries skipped)')
        log.info('%s', description)
        return cls(network, mano_data, settings, device, precision, threads, description, allow_cpu_fallback, compile)

    @classmethod
    def small_random(cls, seed: int = 0, device: str = 'cpu', precision: str = 'fp32',
                     threads: Optional[int] = None, config: Optional[NetworkConfig] = None,
                     allow_cpu_fallback: bool = False, compile: bool = False) -> 'HamerModel':
        """A small network with deterministic random weights and a synthetic MANO: fast tests of everything
        around the network (same inputs, outputs and conventions as the real model)."""
        config = config or NetworkConfig.small()
        network = init_random_(HamerNetwork(config), seed)
        return cls(network, synthetic_mano(seed), ckpt_io.ModelSettings(network=config, source='small_random'),
                   device, precision, threads, f'small random HaMeR (seed {seed}, {config})', allow_cpu_fallback,
                   compile)

    # ---------------------------------------------------------------------------------------- properties

    @property
    def faces(self) -> np.ndarray:
        """(1538, 3) int64 MANO triangles, right-hand winding (see `mano.faces_for_side`)."""
        return self.mano.faces

    def describe(self) -> str:
        extras = ''.join([', torch.compile' if self._compiled_core is not None else '',
                          f', batches of at most {self._max_batch} (after out-of-memory)' if self._max_batch else ''])
        return f'{self._description} on {self.device}, {self.precision}{extras}, {torch.get_num_threads()} CPU threads'

    def default_intrinsics(self, width: int, height: int) -> CameraIntrinsics:
        """The official demo's camera (docs/model.md §5.2): focal FOCAL_LENGTH / IMAGE_SIZE * max(W, H), centre W/2, H/2
        (= `CameraIntrinsics.hamer_default` for the released config)."""
        focal = self.settings.focal_length / self.settings.image_size * max(width, height)
        return CameraIntrinsics(focal, focal, width / 2.0, height / 2.0, from_camera_info=False)

    # ------------------------------------------------------------------------------------------- running

    def forward_crops(self, crops, debug: bool = False) -> Dict[str, np.ndarray]:
        """Raw official outputs for normalized crops (N, 3, 256, 256): ``pred_cam``, ``pred_cam_t``,
        ``focal_length``, ``global_orient`` (N,1,3,3), ``hand_pose``, ``betas``, ``pred_vertices``,
        ``pred_keypoints_3d``, ``pred_keypoints_2d`` (normalized crop units), plus ``joint_rotations`` and,
        with `debug`, the ``debug_*`` intermediate tensors of the public fixture. All in the crop's (mirrored
        for left hands) frame, numpy float32."""
        if not isinstance(crops, torch.Tensor):
            crops = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))
        crops = crops.float()
        if crops.ndim != 4 or tuple(crops.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE) or len(crops) == 0:
            raise ValueError(f'expected crops (N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) with N >= 1, got {tuple(crops.shape)}')
        with torch.inference_mode():
            outputs = self._forward_with_fallback(crops, debug)
        return _to_numpy(outputs)

    # The official outputs are batch-first tensors; `debug` adds the fixture's intermediate tensors.

    def _forward_with_fallback(self, crops: torch.Tensor, debug: bool) -> Dict[str, torch.Tensor]:
        """All crops through the core, in chunks of `_max_batch`; out of memory -> halve the chunks, then the CPU
        (when allowed). The retry happens outside the `except` block so the failed attempt's tensors are freed."""
        while True:
            step = min(len(crops), self._max_batch or len(crops))
            try:
                host = self._stage(crops)
                parts = [self._run_core(host[start:start + step], debug) for start in range(0, len(crops), step)]
                break
            except torch.OutOfMemoryError as exc:
                error = f'{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else "out of memory"}'
            self._release_cached_memory()
            if step > 1:
                self._max_batch = step // 2
                log.warning('HaMeR ran out of memory on %s with %d crops at once (%s); retrying in batches of %d',
                            self.device, step, error, self._max_batch)
            elif self.device.type != 'cpu' and self.allow_cpu_fallback:
                log.warning('HaMeR ran out of memory on %s even for one crop (%s); moving the model to the CPU '
                            '(fp32, much slower). Free GPU memory and restart to use the GPU again', self.device, error)
                self._move_to_cpu()
            else:
                advice = ('free GPU memory (other processes, a smaller model), or allow the CPU fallback '
                          '(allow_cpu_fallback)' if self.device.type != 'cpu' else 'free memory for this process')
                raise SetupError(f'HaMeR ran out of memory on {self.device} with a single crop ({error}): {advice}')
        if len(parts) == 1:
            return parts[0]
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

    def _run_core(self, crops: torch.Tensor, debug: bool) -> Dict[str, torch.Tensor]:
        """One chunk of host crops through network + MANO on the model's device; tensors stay there."""
        count = len(crops)
        crops = crops.to(self.device, non_blocking=True)
        intermediates: Optional[Dict[str, torch.Tensor]] = {} if debug else None
        # Autocast is the CUDA half-precision path; CPU bf16 has bf16 weights (`Linear` handles the casts).
        autocast = AUTOCAST_DTYPES.get(self.precision) if self.device.type == 'cuda' else None
        with torch.autocast(self.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            if self._compiled_core is not None and not debug:
                padded = 1 << (count - 1).bit_length()   # a power of two: few distinct shapes to compile/capture
                if padded > count:
                    crops = torch.cat([crops, crops.new_zeros((padded - count,) + crops.shape[1:])])
                # Cloned: CUDA-graph outputs are overwritten by the graph's next replay (the next chunk).
                outputs = {name: value[:count].clone() for name, value in self._compiled_core(crops).items()}
            else:
                outputs = self.core(crops, intermediates)
        if intermediates:
            outputs.update(intermediates)
        return outputs

    def _stage(self, crops: torch.Tensor) -> torch.Tensor:
        """CUDA: the crops copied into a reused pinned buffer (page-locked memory uploads asynchronously and
        faster); on the CPU the crops themselves. The buffer is free again once a call returns: `_to_numpy`
        synchronises on the results."""
        if self.device.type != 'cuda':
            return crops
        if self._staging is None or len(self._staging) < len(crops):
            self._staging = torch.empty((max(len(crops), 2),) + tuple(crops.shape[1:]), dtype=torch.float32,
                                        pin_memory=True)
        staged = self._staging[:len(crops)]
        staged.copy_(crops)
        return staged

    def _move_to_cpu(self) -> None:
        self.core.to('cpu')
        self.device = torch.device('cpu')
        if self.precision in AUTOCAST_DTYPES:
            self.precision = 'fp32'
        self._max_batch = None
        self._staging = None
        self._compiled_core = self._make_compiled_core() if self._compile else None
        self._release_cached_memory()

    def _release_cached_memory(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _make_compiled_core(self):
        # CUDA graphs remove the per-kernel launch cost that dominates a small batch on a fast GPU.
        mode = 'reduce-overhead' if self.device.type == 'cuda' else None
        return torch.compile(self.core, mode=mode, dynamic=False)

    def predict(self, image_bgr: np.ndarray, detections: Sequence[HandDetection],
                intrinsics: Optional[CameraIntrinsics] = None) -> List[HandReconstruction]:
        """One `HandReconstruction` per detection, same order; all hands in one forward pass.
        `intrinsics` None: the official default camera (`default_intrinsics`)."""
        return self.predict_batch(image_bgr, detections, intrinsics).hands

    def predict_batch(self, image_bgr: np.ndarray, detections: Sequence[HandDetection],
                      intrinsics: Optional[CameraIntrinsics] = None) -> BatchPrediction:
        camera = self._camera(image_bgr, intrinsics)
        if not detections:
            return BatchPrediction([], np.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32), {}, camera)
        crops, centers, sizes, is_right = self._crops(image_bgr, detections)
        raw = self.forward_crops(crops)
        return BatchPrediction(self._hands(raw, centers, sizes, is_right, camera), crops, raw, camera)

    def predict_frames(self, frames: Sequence[Tuple[np.ndarray, Sequence[HandDetection], Optional[CameraIntrinsics]]]
                       ) -> List[List[HandReconstruction]]:
        """`predict` for several frames (image, detections, intrinsics) with the crops of all of them in one
        forward pass: offline tools batch hands across frames this way."""
        prepared, cameras = [], []
        for image_bgr, detections, intrinsics in frames:
            cameras.append(self._camera(image_bgr, intrinsics))
            prepared.append(self._crops(image_bgr, detections) if detections else None)
        crops = [p[0] for p in prepared if p is not None]
        if not crops:
            return [[] for _ in prepared]
        raw = self.forward_crops(np.concatenate(crops))
        results, start = [], 0
        for item, camera in zip(prepared, cameras):
            if item is None:
                results.append([])
                continue
            count = len(item[0])
            part = {name: value[start:start + count] for name, value in raw.items()}
            results.append(self._hands(part, *item[1:], camera))
            start += count
        return results

    def _camera(self, image_bgr: np.ndarray, intrinsics: Optional[CameraIntrinsics]) -> CameraIntrinsics:
        """`intrinsics`, or the official default camera for this image's size when None."""
        if intrinsics is not None:
            return intrinsics
        height, width = np.asarray(image_bgr).shape[:2]
        return self.default_intrinsics(width, height)

    @staticmethod
    def _crops(image_bgr: np.ndarray, detections: Sequence[HandDetection]):
        boxes = np.stack([d.box_xyxy for d in detections])
        is_right = np.array([d.is_right for d in detections])
        crops, centers, sizes = make_crops(image_bgr, boxes, is_right)
        return crops, centers, sizes, is_right

    def _hands(self, raw: Dict[str, np.ndarray], centers: np.ndarray, sizes: np.ndarray, is_right: np.ndarray,
               camera: CameraIntrinsics) -> List[HandReconstruction]:
        return hands_in_camera(raw, centers, sizes, is_right, camera, self.uses_perspective_correction(camera))


def hands_in_camera(raw: Dict[str, np.ndarray], centers: np.ndarray, sizes: np.ndarray, is_right: np.ndarray,
                    camera: CameraIntrinsics, perspective_correction: bool) -> List[HandReconstruction]:
    """Network outputs of one image's crops (`HamerCore` names; `centers`, `sizes` from `make_crops`) -> hands in
    the image frame and the camera: official placement, or perspective-correct (module docstring)."""
    # Back from the mirrored crop frame for left hands (docs/model.md §7): x -> -x.
    sign = np.where(is_right, 1.0, -1.0).astype(np.float32)
    mirror_x = np.stack([sign, np.ones_like(sign), np.ones_like(sign)], axis=-1)[:, None, :]
    vertices = raw['pred_vertices'] * mirror_x
    keypoints_3d = raw['pred_keypoints_3d'] * mirror_x
    rotations = {name: np.where(is_right[:, None, None, None], raw[name], mano_lib.mirror_rotations(raw[name]))
                 for name in ('global_orient', 'hand_pose', 'joint_rotations')}
    cam_for_full = raw['pred_cam'] * np.stack([np.ones_like(sign), sign, np.ones_like(sign)], axis=-1)
    if perspective_correction:
        # The un-mirrored crop is a right-or-left hand seen by the virtual camera through the crop centre: rotate
        # it about the camera's optical centre into the camera frame (the mirror is about the crop's own axis).
        ray, cam_t = crop_to_camera_perspective(cam_for_full, centers, sizes, camera)
        vertices = np.einsum('nij,nvj->nvi', ray, vertices).astype(np.float32)
        keypoints_3d = np.einsum('nij,nvj->nvi', ray, keypoints_3d).astype(np.float32)
        for name in ('global_orient', 'joint_rotations'):      # global rotations; hand_pose is parent-relative
            rotations[name] = np.einsum('nij,nkjl->nkil', ray, rotations[name]).astype(np.float32)
        cam_t = cam_t.astype(np.float32)
    else:
        cam_t = cam_crop_to_full(cam_for_full, centers, sizes, camera)
    keypoints_2d = project_points(keypoints_3d + cam_t[:, None], camera).astype(np.float32)
    focal = np.array([camera.fx, camera.fy], dtype=np.float32)

    return [HandReconstruction(
        is_right=bool(is_right[i]), pred_cam=raw['pred_cam'][i], global_orient=rotations['global_orient'][i, 0],
        hand_pose=rotations['hand_pose'][i], betas=raw['betas'][i], vertices=vertices[i],
        keypoints_3d=keypoints_3d[i], cam_t=cam_t[i], keypoints_2d=keypoints_2d[i],
        joint_rotations=rotations['joint_rotations'][i], box_center=centers[i], box_size=float(sizes[i]),
        focal_length=focal.copy()) for i in range(len(is_right))]


def _to_numpy(outputs: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    """Float32 numpy arrays of the batch-first output tensors, gathered into one block first: from a GPU that is a
    single device-to-host copy and synchronisation instead of one per output (on the CPU it costs ~10 us)."""
    batch = next(iter(outputs.values())).shape[0]
    flat = torch.cat([value.float().reshape(batch, -1) for value in outputs.values()], dim=1).cpu().numpy()
    arrays, start = {}, 0
    for name, value in outputs.items():
        width = math.prod(value.shape[1:])
        arrays[name] = flat[:, start:start + width].reshape(value.shape)
        start += width
    return arrays


def synthetic_mano(seed: int = 0) -> mano_lib.ManoData:
    """A random MANO-shaped model (right shapes, kinematic tree and value ranges; no hand geometry) for tests."""
    rng = np.random.default_rng(seed)
    n_verts, n_joints = mano_lib.NUM_VERTICES, mano_lib.NUM_JOINTS
    v_template = (rng.normal(size=(n_verts, 3)) * [0.04, 0.01, 0.02]).astype(np.float32)
    regressor = rng.random((n_joints, n_verts)) * (rng.random((n_joints, n_verts)) < 0.03)
    regressor[:, 0] += 1e-3   # no empty row
    weights = np.exp(3.0 * rng.normal(size=(n_verts, n_joints)))
    faces = np.stack([rng.permutation(n_verts)[:3] for _ in range(mano_lib.NUM_FACES)])
    return mano_lib.ManoData(
        v_template=v_template,
        shapedirs=(0.003 * rng.normal(size=(n_verts, 3, mano_lib.NUM_BETAS))).astype(np.float32),
        posedirs=(0.002 * rng.normal(size=(mano_lib.NUM_POSE_BASIS, 3 * n_verts))).astype(np.float32),
        J_regressor=(regressor / regressor.sum(1, keepdims=True)).astype(np.float32),
        parents=np.array(mano_lib.MANO_PARENTS, dtype=np.int64),
        lbs_weights=(weights / weights.sum(1, keepdims=True)).astype(np.float32),
        faces=faces.astype(np.int64), source=f'synthetic (seed {seed})')
