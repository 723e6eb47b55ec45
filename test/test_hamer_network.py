"""The network on its own: official state-dict names, 6D rotations, the oneDNN linear, the FLOP count."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from fixture_weights import checkpoint_keys
from hamer_ros.hamer.network import HamerNetwork, Linear, NetworkConfig, init_random_, rotation_6d_to_matrix


def test_module_names_shapes_and_dtypes_are_the_official_state_dict():
    # The fixture generator's key list is the official one: the seed-1 state-dict hash it is checked against
    # (scripts/prepare_test_data.py) covers every name, shape and dtype in order.
    official = {name: (shape, str(dtype).replace('torch.', '')) for name, shape, dtype in checkpoint_keys()
                if name.startswith(('backbone.', 'mano_head.'))}
    with torch.device('meta'):
        network = HamerNetwork(NetworkConfig())
    ours = {name: (tuple(t.shape), str(t.dtype).replace('torch.', '')) for name, t in network.state_dict().items()}
    assert ours == official
    assert sum(t.numel() for n, t in network.state_dict().items() if n.startswith('backbone.')) == 630_912_000


def test_rotation_6d_to_matrix_is_gram_schmidt_on_columns():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=generator, dtype=torch.float64)
    rotations = rotation_6d_to_matrix(x)
    identity = torch.eye(3, dtype=torch.float64).expand(500, 3, 3)
    torch.testing.assert_close(rotations.transpose(1, 2) @ rotations, identity, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotations), torch.ones(500, dtype=torch.float64))
    # Column 0 is the first 3-vector's direction; column 1 lies in the plane of both, on the side of the second.
    torch.testing.assert_close(rotations[:, :, 0], x[:, :3] / x[:, :3].norm(dim=1, keepdim=True))
    assert torch.all((rotations[:, :, 1] * x[:, 3:]).sum(1) > 0)
    normal = torch.linalg.cross(x[:, :3], x[:, 3:], dim=1)
    torch.testing.assert_close((rotations[:, :, 1] * normal).sum(1), torch.zeros(500, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    # The first two columns of a rotation are its 6D code.
    torch.testing.assert_close(rotation_6d_to_matrix(torch.cat([rotations[:, :, 0], rotations[:, :, 1]], 1)), rotations)


@pytest.mark.parametrize('bias', [True, False])
def test_linear_matches_float64_reference_in_every_mode(bias):
    generator = torch.Generator().manual_seed(1)
    layer = Linear(320, 96, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(96, 320, generator=generator) / 18)
    x = torch.randn(2, 50, 320, generator=generator)
    reference = F.linear(x.double(), layer.weight.double(), None if layer.bias is None else layer.bias.double())
    with torch.inference_mode():
        fast = layer(x)
    with torch.no_grad():   # exported graphs (e.g. for ONNX) must hold the portable aten linear
        exported = torch.export.export(layer, (x,))
        assert 'mkldnn' not in str(exported.graph) and 'linear' in str(exported.graph)
        from_export = exported.module()(x)
    plain = layer(x).detach()   # grad enabled: the plain aten path
    for out in (fast, from_export, plain):
        assert out.dtype == torch.float32 and out.shape == (2, 50, 96)
        torch.testing.assert_close(out.double(), reference, atol=2e-6, rtol=1e-6)


def test_small_network_outputs():
    network = init_random_(HamerNetwork(NetworkConfig.small()), seed=3).eval()
    crops = torch.randn(3, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    debug = {}
    with torch.inference_mode():
        global_orient, hand_pose, betas, pred_cam = network(crops, debug)
        single = network(crops[1:2])
    assert global_orient.shape == (3, 1, 3, 3) and hand_pose.shape == (3, 15, 3, 3)
    assert betas.shape == (3, 10) and pred_cam.shape == (3, 3)
    assert debug['debug_backbone_feats'].shape == (3, 64, 16, 12) and debug['debug_pred_pose_6d'].shape == (3, 96)
    assert set(debug) == {'debug_patch_embed', 'debug_block0_out', 'debug_block1_out', 'debug_backbone_feats',
                          'debug_token_out', 'debug_pred_pose_6d'}
    for batched, alone in zip((global_orient, hand_pose, betas, pred_cam), single):
        torch.testing.assert_close(batched[1:2], alone, atol=1e-5, rtol=0)
    # The backbone sees only columns 32..223 of the crop (docs/model.md §2 input cut).
    outside = crops.clone()
    outside[:, :, :, :32] = 7.0
    outside[:, :, :, 224:] = -7.0
    with torch.inference_mode():
        assert torch.equal(network(outside)[3], pred_cam)


def test_analytic_flop_count_matches_pytorch_counter():
    config = NetworkConfig.small()
    network = init_random_(HamerNetwork(config), seed=0)
    counter = FlopCounterMode(display=False)
    # Grad mode on, so every Linear takes the aten path the counter sees; math attention = counted matmuls.
    with counter, sdpa_kernel(SDPBackend.MATH):
        network(torch.zeros(2, 3, 256, 256))
    assert counter.get_total_flops() == 2 * config.flops_per_crop()
    assert NetworkConfig().flops_per_crop() == pytest.approx(251.1e9, rel=1e-3)
