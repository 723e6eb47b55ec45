"""The HaMeR network: ViT-H backbone (docs/model.md §2) and transformer-decoder MANO head (docs/model.md §3).

Module and parameter names follow the official ``HAMER`` module, so the checkpoint's ``backbone.*`` and
``mano_head.*`` entries load into `HamerNetwork` as they are (``load_state_dict(..., assign=True)``; see
``hamer_ros.hamer.checkpoint``). Sizes are parameters (`NetworkConfig`): the released model is
`NetworkConfig()` (ViT-H + 6-layer decoder), `NetworkConfig.small()` is a tiny variant for fast tests.

CPU speed: PyTorch's fp32 ``F.linear`` goes through MKL, whose sgemm takes a slow path on AMD CPUs (measured
about a third of oneDNN's rate on the same plain weights, docs/performance.md). `Linear` therefore
calls oneDNN's linear directly on CPU when it is available and we are not tracing/exporting; both are exact
float32 matmuls (they differ only in summation order, ~1e-7 relative). The weights stay in their plain
layout, so memory-mapped checkpoint tensors are used as they are, with no packed copy.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

BACKBONE_LAYER_NORM_EPS = 1e-6   # every ViT LayerNorm (docs/model.md §2)
HEAD_LAYER_NORM_EPS = 1e-5       # torch default, the decoder's LayerNorms (docs/model.md §3)


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the network. The defaults are the released HaMeR model (docs/model.md §2-3)."""
    image_size: int = 256          # square crop fed to the model
    backbone_width: int = 192      # the backbone sees crop columns 32..223 (docs/model.md §2 "input cut")
    patch_size: int = 16
    patch_padding: int = 2         # 4 + 2*(ratio//2 - 1) with ratio 1 (docs/model.md §2)
    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: int = 4
    decoder_dim: int = 1024
    decoder_depth: int = 6
    decoder_heads: int = 8
    decoder_dim_head: int = 64
    decoder_mlp_dim: int = 1024
    num_hand_joints: int = 15
    num_betas: int = 10

    @classmethod
    def small(cls) -> 'NetworkConfig':
        """A tiny model with the same structure and input/output shapes, for tests."""
        return cls(embed_dim=64, depth=2, num_heads=4, decoder_dim=64, decoder_depth=2, decoder_heads=2,
                   decoder_dim_head=16, decoder_mlp_dim=64)

    @property
    def grid(self):
        """Patch grid (rows, cols): 16 x 12 for 256 x 192 with kernel 16, stride 16, padding 2."""
        def cells(length):
            return (length + 2 * self.patch_padding - self.patch_size) // self.patch_size + 1
        return cells(self.image_size), cells(self.backbone_width)

    @property
    def num_tokens(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @property
    def pose_6d_size(self) -> int:
        return 6 * (self.num_hand_joints + 1)   # '6d' joint representation, root included (docs/model.md §3)

    def flops_per_crop(self) -> int:
        """Multiply-adds x 2 of one crop's forward pass (matmuls and convolution only; the rest is <0.5 %)."""
        n, d = self.num_tokens, self.embed_dim
        hidden = self.mlp_ratio * d
        patch = n * d * 3 * self.patch_size ** 2
        per_block = n * d * (3 * d + d + 2 * hidden) + 2 * n * n * d   # projections + q@k^T and attn@v
        inner = self.decoder_heads * self.decoder_dim_head
        dd = self.decoder_dim
        per_layer = (dd * 3 * inner + 2 * inner + inner * dd   # self-attention on the single token
                     + dd * inner + n * d * 2 * inner + 2 * n * inner + inner * dd   # cross-attention
                     + 2 * dd * self.decoder_mlp_dim)       # feed-forward
        token_and_readout = dd + dd * (self.pose_6d_size + self.num_betas + 3)
        return 2 * (patch + self.depth * per_block + self.decoder_depth * per_layer + token_and_readout)


def _onednn_linear_available() -> bool:
    op = getattr(torch.ops.mkldnn, '_linear_pointwise', None)
    return op is not None and torch.backends.mkldnn.is_available()


_ONEDNN_LINEAR = _onednn_linear_available()


class Linear(nn.Linear):
    """``nn.Linear`` that runs oneDNN's kernel on CPU (see the module docstring for why).

    With bfloat16 weights (`to_bfloat16_`, CPU precision 'bf16') the input is rounded to bf16 and the result is
    bf16 (oneDNN accumulates in float32). What consumes it decides the precision downstream: attention and GELU
    run on the bf16 values, while the residual additions ``x + f(x)`` promote to float32, so the residual stream,
    the LayerNorms and everything the head's read-outs see stay float32.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dtype == torch.bfloat16:
            x = x.to(torch.bfloat16)
        return _linear(x, self.weight, self.bias)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    if (_ONEDNN_LINEAR and x.device.type == 'cpu' and x.dtype in (torch.float32, torch.bfloat16)
            and weight.dtype == x.dtype and (bias is None or bias.dtype == x.dtype)
            and not torch.is_grad_enabled() and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
            and not torch.onnx.is_in_onnx_export()):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], '')
    return F.linear(x, weight, bias)


# ------------------------------------------------------------------------------------------------ backbone

class PatchEmbed(nn.Module):
    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size,
                              padding=cfg.patch_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)   # (B, rows*cols, D), row-major tokens


class ViTAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = Linear(dim, 3 * dim, bias=True)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # [q | k | v], each split into contiguous heads (docs/model.md §2 "Attention")
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)   # softmax(q k^T / sqrt(head_dim)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class ViTMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()   # exact erf form (docs/model.md §2)
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=BACKBONE_LAYER_NORM_EPS)
        self.attn = ViTAttention(cfg.embed_dim, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=BACKBONE_LAYER_NORM_EPS)
        self.mlp = ViTMlp(cfg.embed_dim, cfg.mlp_ratio * cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTBackbone(nn.Module):
    """ViTPose-style ViT without a class token; returns the normalized tokens (B, N, D)."""

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens + 1, cfg.embed_dim))
        self.blocks = nn.ModuleList(ViTBlock(cfg) for _ in range(cfg.depth))
        self.last_norm = nn.LayerNorm(cfg.embed_dim, eps=BACKBONE_LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, debug: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        x = self.patch_embed(x)
        if debug is not None:
            debug['debug_patch_embed'] = x
        # Row 0 of pos_embed (the unused "cls" slot) is added to every token (docs/model.md §2 "Position embedding").
        x = x + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for index, block in enumerate(self.blocks):
            x = block(x)
            if debug is not None and index in (0, len(self.blocks) - 1):
                debug[f'debug_block{index}_out'] = x
        return self.last_norm(x)


# ------------------------------------------------------------------------------------------------ MANO head

class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.fn(self.norm(x), **kwargs)   # the context is not normalized (docs/model.md §3)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, inner = x.shape
    return x.reshape(b, n, heads, inner // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.to_qkv = Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Sequential(Linear(heads * dim_head, dim))   # state-dict name `to_out.0`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.to_q = Linear(dim, heads * dim_head, bias=False)
        self.to_kv = Linear(context_dim, 2 * heads * dim_head, bias=False)   # [k | v]
        self.to_out = nn.Sequential(Linear(heads * dim_head, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = _split_heads(self.to_q(x), self.heads)
        k, v = (_split_heads(t, self.heads) for t in self.to_kv(context).chunk(2, dim=-1))
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        # Index 2 was a Dropout(0) in the official module; Identity keeps the second Linear at `net.3`.
        self.net = nn.Sequential(Linear(dim, hidden), nn.GELU(), nn.Identity(), Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DecoderLayers(nn.Module):
    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        dim = cfg.decoder_dim
        self.layers = nn.ModuleList(
            nn.ModuleList([
                PreNorm(dim, SelfAttention(dim, cfg.decoder_heads, cfg.decoder_dim_head)),
                PreNorm(dim, CrossAttention(dim, cfg.embed_dim, cfg.decoder_heads, cfg.decoder_dim_head)),
                PreNorm(dim, FeedForward(dim, cfg.decoder_mlp_dim)),
            ]) for _ in range(cfg.decoder_depth))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for self_attn, cross_attn, feed_forward in self.layers:
            x = self_attn(x) + x
            x = cross_attn(x, context=context) + x
            x = feed_forward(x) + x
        return x


class TokenDecoder(nn.Module):
    """One query token (made from a zero input, docs/model.md §3 'TRANSFORMER_INPUT zero') attending to the image."""

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.to_token_embedding = Linear(1, cfg.decoder_dim)
        self.pos_embedding = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.transformer = DecoderLayers(cfg)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        token = context.new_zeros(context.shape[0], 1, 1)
        x = self.to_token_embedding(token) + self.pos_embedding
        return self.transformer(x, context=context)[:, 0]


class ManoHead(nn.Module):
    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.transformer = TokenDecoder(cfg)
        self.decpose = Linear(cfg.decoder_dim, cfg.pose_6d_size)
        self.decshape = Linear(cfg.decoder_dim, cfg.num_betas)
        self.deccam = Linear(cfg.decoder_dim, 3)
        # Mean parameters the predictions are offsets from (docs/model.md §3 read-out); values come from the checkpoint.
        self.register_buffer('init_hand_pose', torch.zeros(1, cfg.pose_6d_size))
        self.register_buffer('init_betas', torch.zeros(1, cfg.num_betas))
        self.register_buffer('init_cam', torch.zeros(1, 3))

    def forward(self, context: torch.Tensor, debug: Optional[Dict[str, torch.Tensor]] = None):
        token = self.transformer(context)
        pose_6d = self.decpose(token) + self.init_hand_pose
        if debug is not None:
            debug['debug_token_out'] = token
            debug['debug_pred_pose_6d'] = pose_6d
        return pose_6d, self.decshape(token) + self.init_betas, self.deccam(token) + self.init_cam


def rotation_6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3): Gram-Schmidt on the two 3-vectors, which become the first two columns
    (docs/model.md §3 '6D -> rotation')."""
    a1, a2 = x[..., 0:3], x[..., 3:6]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


class HamerNetwork(nn.Module):
    """crops (B, 3, 256, 256), normalized -> MANO rotations, betas and the crop camera (docs/model.md §2-3)."""

    def __init__(self, cfg: NetworkConfig = NetworkConfig()):
        super().__init__()
        self.config = cfg
        self.backbone = ViTBackbone(cfg)
        self.mano_head = ManoHead(cfg)

    def forward(self, crops: torch.Tensor, debug: Optional[Dict[str, torch.Tensor]] = None):
        """Returns (global_orient (B,1,3,3), hand_pose (B,J,3,3), betas (B,10), pred_cam (B,3)); fills `debug`
        with the intermediate tensors of the public fixture when a dict is given."""
        cfg = self.config
        margin = (cfg.image_size - cfg.backbone_width) // 2
        tokens = self.backbone(crops[:, :, :, margin:cfg.image_size - margin], debug)
        if debug is not None:
            rows, cols = cfg.grid
            debug['debug_backbone_feats'] = tokens.transpose(1, 2).reshape(-1, cfg.embed_dim, rows, cols)
        pose_6d, betas, pred_cam = self.mano_head(tokens, debug)
        rotations = rotation_6d_to_matrix(pose_6d.reshape(-1, cfg.num_hand_joints + 1, 6))
        return rotations[:, :1], rotations[:, 1:], betas, pred_cam


def init_random_(network: HamerNetwork, seed: int) -> HamerNetwork:
    """Deterministic random weights at scales that keep the pre-norm stacks well-behaved (tests only)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith('init_hand_pose'):   # near-identity rotations: 6D of I is (1, 0, 0, 0, 1, 0)
                identity_6d = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).repeat(tensor.shape[1] // 6)
                tensor.copy_(identity_6d + 0.1 * noise)
            elif name.endswith('init_cam'):
                tensor.copy_(torch.tensor([[0.9, 0.0, 0.0]]) + 0.01 * noise)   # positive scale: positive depth
            elif tensor.dim() == 1 and 'norm' in name and name.endswith('.weight'):
                tensor.copy_(1.0 + 0.05 * noise)
            elif tensor.dim() >= 2 and name.endswith('weight'):
                gain = 0.1 if name.startswith('mano_head.dec') else 1.0
                tensor.copy_(noise * (gain / math.sqrt(math.prod(tensor.shape[1:]))))
            else:
                tensor.copy_(0.02 * noise)
    return network


# ------------------------------------------------------------------------------------------------ bf16 (CPU)

def bf16_linears(network: HamerNetwork) -> Dict[str, Linear]:
    """The Linears `to_bfloat16_` converts: all of the ViT blocks (qkv, proj, fc1, fc2) and of the head's
    decoder layers (attention and feed-forward): 99.8 % of the FLOPs. Left in float32: the patch embedding
    (a 16x16 convolution, 0.2 % of the FLOPs), the head's token embedding and its pose/shape/camera read-outs,
    whose outputs feed MANO and the camera directly."""
    return {name: module for root, prefix in ((network.backbone.blocks, 'backbone.blocks'),
                                              (network.mano_head.transformer.transformer,
                                               'mano_head.transformer.transformer'))
            for name, module in ((f'{prefix}.{n}', m) for n, m in root.named_modules()) if isinstance(module, Linear)}


def to_bfloat16_(network: HamerNetwork, names=None) -> int:
    """Converts the weights of `bf16_linears` (or of the Linears named in `names`) to bfloat16, once, in place;
    returns how many bytes of memory-mapped fp32 checkpoint pages were given back to the system.

    Each fp32 weight is converted and its checkpoint pages are dropped from the process right away
    (`mapped_memory.release_file_pages`), so the process never holds the fp32 and the bf16 copy of the ViT.
    Biases become bf16 too (oneDNN adds them in its float32 accumulator). CPU precision 'bf16'
    (``hamer_ros.hamer.model``); meant for CPUs with native bf16 (``hamer_ros.cpu_info.native_bf16``).
    """
    from hamer_ros.hamer.mapped_memory import release_file_pages

    linears = bf16_linears(network)
    if names is not None:
        modules = dict(network.named_modules())
        linears = {name: modules[name] for name in names}
    released = 0
    with torch.no_grad():
        for linear in linears.values():
            fp32 = [linear.weight] + ([linear.bias] if linear.bias is not None else [])
            linear.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
            if linear.bias is not None:
                linear.bias = nn.Parameter(linear.bias.detach().to(torch.bfloat16), requires_grad=False)
            released += release_file_pages(fp32)
            del fp32
    return released


# ------------------------------------------------------------------------------------------------ int8 (CPU)

class _DynamicInt8Linear(torch.ao.nn.quantized.dynamic.Linear):
    """PyTorch's dynamically quantised Linear, also built from our `Linear` (``from_float`` accepts only the
    exact ``nn.Linear`` class). The float weight is shared, not copied, on the way to the int8 copy.

    Activations get the full 8 bits where the CPU has VNNI (`reduce_range` False). PyTorch's module always
    quantises them to 7 bits ("reduce_range"): the pre-VNNI AVX2 instruction (vpmaddubsw) adds two u8 x s8
    products in a saturating int16, which full-range inputs can overflow; VNNI's vpdpbusd accumulates in int32
    and cannot. On the seed-1 fixture the 8th bit cuts int8's deviation from fp32 (docs/performance.md)."""

    reduce_range = True

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        plain = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None, device='meta')
        plain.weight, plain.bias, plain.qconfig = mod.weight, mod.bias, mod.qconfig
        return super().from_float(plain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 in and out, also after a bf16 Linear (int8 mixed with bf16, `quantize_int8_`).
        return torch.ops.quantized.linear_dynamic(x.float(), self._packed_params._packed_params,
                                                  reduce_range=self.reduce_range)


def int8_linears(network: HamerNetwork, kinds=('qkv', 'proj', 'fc1', 'fc2')) -> Dict[str, Linear]:
    """The ViT blocks' Linears of the given kinds (attention qkv/proj, MLP fc1/fc2), by state-dict name."""
    return {f'backbone.blocks.{name}': module for name, module in network.backbone.blocks.named_modules()
            if isinstance(module, Linear) and name.rsplit('.', 1)[-1] in kinds}


def quantize_int8_(network: HamerNetwork, names=None, bf16_names=(), full_range: Optional[bool] = None
                   ) -> HamerNetwork:
    """Dynamic int8 quantisation of the Linears named in `names` (default: every ViT block Linear, `int8_linears`),
    in place; the Linears in `bf16_names` get bf16 weights instead (`to_bfloat16_`).

    Weights become int8 per output channel, activations are quantised per call (per tensor) and the matmuls run
    on the quantized engine's int8 (VNNI) kernels, at a quarter of the fp32 weight memory. Everything else stays
    float32: the patch embedding, and the MANO head, which is cheap and whose quantisation doubled the deviation
    from fp32 on the fixture (docs/performance.md). The fp32 checkpoint pages of every converted
    weight are given back (`mapped_memory`). Which layers the CPU precision 'int8' quantises and which it keeps in
    bf16 comes from the per-layer study in docs/performance.md (``hamer_ros.hamer.model.INT8_PLAN``).
    `full_range`: 8-bit activations (default: where the CPU has VNNI, see `_DynamicInt8Linear`), else 7-bit.
    CPU only. Speed and deviation: benchmarks/bench_hamer.py; the study: benchmarks/study_int8.py.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig

    from hamer_ros.hamer.mapped_memory import release_file_pages

    from hamer_ros import cpu_info

    if full_range is None:
        full_range = bool({'avx512_vnni', 'avx_vnni'} & cpu_info.cpu_description()[1])
    modules = dict(network.named_modules())
    names = list(int8_linears(network)) if names is None else list(names)
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the eager API is what this torch version has.
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        warnings.filterwarnings('ignore', message='.*quantize_per_(tensor|channel).*deprecated')
        for name in names:
            linear = modules[name]
            linear.qconfig = per_channel_dynamic_qconfig
            parent_name, _, child = name.rpartition('.')
            quantized = _DynamicInt8Linear.from_float(linear)
            quantized.reduce_range = not full_range
            setattr(modules[parent_name], child, quantized)
            release_file_pages([linear.weight])
    if bf16_names:
        to_bfloat16_(network, bf16_names)
    return network
