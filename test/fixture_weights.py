#!/usr/bin/env python3
"""Deterministic stand-ins for HaMeR's release files, for the tests (torch, numpy and scipy only).

    python test/fixture_weights.py --seed 1 --out DIR              # the whole `_DATA` folder (~40 s, 2.6 GB)
    python test/fixture_weights.py --seed 1 --out DIR --mano-only  # everything but the checkpoint (~2 s)

writes, laid out like the official ``_DATA`` folder (docs/ and hamer_ros.hamer.checkpoint describe it)::

    hamer_ckpts/checkpoints/hamer.ckpt   {'state_dict': 563 tensors, 'epoch', 'global_step', 'fixture'}
    hamer_ckpts/model_config.yaml        the released configuration values
    data/mano/MANO_RIGHT.pkl             a synthetic right-hand MANO: the real key set and shapes, plain numpy
    data/mano_mean_params.npz            'pose' (96,), 'shape' (10,), 'cam' (3,)
    FIXTURE_INFO.json                    seed, key count, file hashes, `state_dict_sha256`

Everything is a pure function of the seed. The reference outputs in test/data/public_crop_case.npz were made by
the official HaMeR code from the seed-1 files of this exact procedure, so it must not change: a regeneration is
checked bit for bit against the published hash of the seed-1 state dict (scripts/prepare_test_data.py), which
covers every key name, dtype, shape and raw byte in key order. The random draws are ``torch.randn`` on a seeded
``torch.Generator`` (float32), reproducible with the torch version scripts/setup_env.sh installs (2.13.0).

The procedure:

* MANO, from one generator seeded ``seed * 1_000_000 + 999_999``, drawn in this order: vertex jitter
  (778 x 3, after the centroid splits), joint jitter (16 x 3), shapedirs noise (778, 3, 10), posedirs (778, 3, 135),
  a 45 x 45 matrix for an orthonormal PCA basis, hands_mean (45), hands_coeffs (1554, 45), then the mean
  parameters: 16 x 3 axis-angles (row 0 redrawn from 3 more numbers), 6D noise (16, 6), betas (10), cam noise (3).
  The mesh is a closed elliptic tube along +x ("mitten": 48 rings of 16 vertices plus an apex, 1520 triangles,
  then 9 triangles split at their centroid -> 778 vertices, 1538 faces), relabelled so that smplx's fingertip
  vertex ids sit at the tips; 16 joints with the MANO kinematic tree; a sparse J_regressor (24 nearest vertices
  per joint, Gaussian weights summing to 1, scipy csc 16 x 778); skinning weights from a softmax over the 3
  nearest bones.
* The checkpoint: key number i of `checkpoint_keys()` (the official ``HAMER.state_dict()`` order) draws
  ``torch.randn(shape)`` once from a fresh generator seeded ``seed * 1_000_000 + i`` and scales it:
  LayerNorm weights 1 + 0.05 r; other 1-D biases 0.02 r; ``backbone.pos_embed`` 0.02 r;
  ``mano_head.transformer.pos_embedding`` r; the decpose/decshape/deccam weights 0.1 r / sqrt(fan_in); every
  other tensor of rank >= 2 r / sqrt(fan_in). No draw for ``mano_head.init_*`` (= the mean parameters, float32),
  ``mano.*`` (the buffers smplx 0.1.28 builds from the pkl, `mano_buffers`) and ``initialized`` (False).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import scipy.sparse
import torch

# MANO facts: the real MANO_RIGHT.pkl's kinematic tree, smplx 0.1.28's fingertip vertex ids (thumb, index,
# middle, ring, pinky) and HaMeR's MANO -> OpenPose joint map (geopavlakos/hamer hamer/models/mano_wrapper.py).
PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
FINGERTIPS = (('thumb', 744), ('index', 320), ('middle', 443), ('ring', 554), ('pinky', 671))
OPENPOSE_ORDER = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
VERTICES, FACES, JOINTS, BETAS, POSE_BASIS, PCA_COMPONENTS = 778, 1538, 16, 10, 135, 6
RINGS, SEGMENTS = 48, 16

# The released model_config.yaml's values (geopavlakos/hamer, the demo data's hamer_ckpts/model_config.yaml).
MODEL_CONFIG_YAML = """\
task_name: train
tags:
- dev
train: true
test: false
ckpt_path: null
seed: null
DATASETS:
  TRAIN:
    FREIHAND-TRAIN:
      WEIGHT: 0.25
    INTERHAND26M-TRAIN:
      WEIGHT: 0.25
    MTC-TRAIN:
      WEIGHT: 0.1
    RHD-TRAIN:
      WEIGHT: 0.05
    COCOW-TRAIN:
      WEIGHT: 0.1
    HALPE-TRAIN:
      WEIGHT: 0.05
    MPIINZSL-TRAIN:
      WEIGHT: 0.05
    HO3D-TRAIN:
      WEIGHT: 0.05
    H2O3D-TRAIN:
      WEIGHT: 0.05
    DEX-TRAIN:
      WEIGHT: 0.05
  VAL:
    FREIHAND-TRAIN:
      WEIGHT: 1.0
  MOCAP: FREIHAND-MOCAP
  BETAS_REG: true
  CONFIG:
    SCALE_FACTOR: 0.3
    ROT_FACTOR: 30
    TRANS_FACTOR: 0.02
    COLOR_SCALE: 0.2
    ROT_AUG_RATE: 0.6
    TRANS_AUG_RATE: 0.5
    DO_FLIP: false
    FLIP_AUG_RATE: 0.0
    EXTREME_CROP_AUG_RATE: 0.0
    EXTREME_CROP_AUG_LEVEL: 1
extras:
  ignore_warnings: false
  enforce_tags: true
  print_config: true
exp_name: hamer
MANO:
  DATA_DIR: _DATA/data/
  MODEL_PATH: data/mano
  GENDER: neutral
  NUM_HAND_JOINTS: 15
  MEAN_PARAMS: data/mano_mean_params.npz
  CREATE_BODY_POSE: false
EXTRA:
  FOCAL_LENGTH: 5000
  NUM_LOG_IMAGES: 4
  NUM_LOG_SAMPLES_PER_IMAGE: 8
  PELVIS_IND: 0
GENERAL:
  TOTAL_STEPS: 1000000
  LOG_STEPS: 1000
  VAL_STEPS: 1000
  CHECKPOINT_STEPS: 10000
  CHECKPOINT_SAVE_TOP_K: 1
  NUM_WORKERS: 8
  PREFETCH_FACTOR: 2
TRAIN:
  LR: 1.0e-05
  WEIGHT_DECAY: 0.0001
  BATCH_SIZE: 32
  LOSS_REDUCTION: mean
  NUM_TRAIN_SAMPLES: 2
  NUM_TEST_SAMPLES: 64
  POSE_2D_NOISE_RATIO: 0.01
  SMPL_PARAM_NOISE_RATIO: 0.005
MODEL:
  IMAGE_SIZE: 256
  IMAGE_MEAN:
  - 0.485
  - 0.456
  - 0.406
  IMAGE_STD:
  - 0.229
  - 0.224
  - 0.225
  BACKBONE:
    TYPE: vit
    PRETRAINED_WEIGHTS: hamer_training_data/vitpose_backbone.pth
  MANO_HEAD:
    TYPE: transformer_decoder
    IN_CHANNELS: 2048
    TRANSFORMER_DECODER:
      depth: 6
      heads: 8
      mlp_dim: 1024
      dim_head: 64
      dropout: 0.0
      emb_dropout: 0.0
      norm: layer
      context_dim: 1280
LOSS_WEIGHTS:
  KEYPOINTS_3D: 0.05
  KEYPOINTS_2D: 0.01
  GLOBAL_ORIENT: 0.001
  HAND_POSE: 0.001
  BETAS: 0.0005
  ADVERSARIAL: 0.0005
"""

Shape = Tuple[int, ...]


# ---------------------------------------------------------------------------------------------- the key list

def checkpoint_keys() -> List[Tuple[str, Shape, torch.dtype]]:
    """(name, shape, dtype) of every entry of the official HAMER state_dict, in its order: the training flag,
    the ViT-H backbone (width 1280, 32 blocks, MLP 5120, 16 px patches on a 256 x 192 crop + 1 position), the
    MANO head (IEF start values, 6-layer transformer decoder of width 1024 with 8 x 64 attention, 1280-wide
    context), the adversarial discriminator (training only) and the MANO buffers smplx registers."""
    f32, i64 = torch.float32, torch.int64
    keys: List[Tuple[str, Shape, torch.dtype]] = [('initialized', (), torch.bool)]

    def linear(prefix, out_features, in_features, bias=True):
        keys.append((f'{prefix}.weight', (out_features, in_features), f32))
        if bias:
            keys.append((f'{prefix}.bias', (out_features,), f32))

    def norm(prefix, width):
        keys.extend([(f'{prefix}.weight', (width,), f32), (f'{prefix}.bias', (width,), f32)])

    width, mlp = 1280, 5120
    keys += [('backbone.pos_embed', (1, 16 * 12 + 1, width), f32),
             ('backbone.patch_embed.proj.weight', (width, 3, 16, 16), f32),
             ('backbone.patch_embed.proj.bias', (width,), f32)]
    for block in range(32):
        at = f'backbone.blocks.{block}'
        norm(f'{at}.norm1', width)
        linear(f'{at}.attn.qkv', 3 * width, width)
        linear(f'{at}.attn.proj', width, width)
        norm(f'{at}.norm2', width)
        linear(f'{at}.mlp.fc1', mlp, width)
        linear(f'{at}.mlp.fc2', width, mlp)
    norm('backbone.last_norm', width)

    dim, inner = 1024, 8 * 64
    keys += [('mano_head.init_hand_pose', (1, 16 * 6), f32), ('mano_head.init_betas', (1, BETAS), f32),
             ('mano_head.init_cam', (1, 3), f32), ('mano_head.transformer.pos_embedding', (1, 1, dim), f32)]
    linear('mano_head.transformer.to_token_embedding', dim, 1)
    for layer in range(6):
        at = f'mano_head.transformer.transformer.layers.{layer}'
        norm(f'{at}.0.norm', dim)                            # self-attention
        linear(f'{at}.0.fn.to_qkv', 3 * inner, dim, bias=False)
        linear(f'{at}.0.fn.to_out.0', dim, inner)
        norm(f'{at}.1.norm', dim)                            # cross-attention to the backbone's tokens
        linear(f'{at}.1.fn.to_kv', 2 * inner, width, bias=False)
        linear(f'{at}.1.fn.to_q', inner, dim, bias=False)
        linear(f'{at}.1.fn.to_out.0', dim, inner)
        norm(f'{at}.2.norm', dim)                            # feed-forward
        linear(f'{at}.2.fn.net.0', dim, dim)
        linear(f'{at}.2.fn.net.3', dim, dim)
    linear('mano_head.decpose', 16 * 6, dim)
    linear('mano_head.decshape', BETAS, dim)
    linear('mano_head.deccam', 3, dim)

    keys += [('discriminator.D_conv1.weight', (32, 9, 1, 1), f32), ('discriminator.D_conv1.bias', (32,), f32),
             ('discriminator.D_conv2.weight', (32, 32, 1, 1), f32), ('discriminator.D_conv2.bias', (32,), f32)]
    for joint in range(JOINTS - 1):
        linear(f'discriminator.pose_out.{joint}', 1, 32)
    linear('discriminator.betas_fc1', 10, BETAS)
    linear('discriminator.betas_fc2', 5, 10)
    linear('discriminator.betas_out', 1, 5)
    linear('discriminator.D_alljoints_fc1', 1024, 32 * (JOINTS - 1))
    linear('discriminator.D_alljoints_fc2', 1024, 1024)
    linear('discriminator.D_alljoints_out', 1, 1024)

    keys += [('mano.shapedirs', (VERTICES, 3, BETAS), f32), ('mano.faces_tensor', (FACES, 3), i64),
             ('mano.v_template', (VERTICES, 3), f32), ('mano.J_regressor', (JOINTS, VERTICES), f32),
             ('mano.posedirs', (POSE_BASIS, VERTICES * 3), f32), ('mano.parents', (JOINTS,), i64),
             ('mano.lbs_weights', (VERTICES, JOINTS), f32), ('mano.hand_components', (PCA_COMPONENTS, 45), f32),
             ('mano.hand_mean', (45,), f32), ('mano.pose_mean', (48,), f32),
             ('mano.extra_joints_idxs', (5,), i64), ('mano.joint_map', (21,), i64),
             ('mano.vertex_joint_selector.extra_joints_idxs', (5,), i64)]
    return keys


# ------------------------------------------------------------------------------------------------------ MANO

def _generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator(device='cpu').manual_seed(seed * 1_000_000 + index)


def _normal(generator: torch.Generator, *shape: int) -> np.ndarray:
    """Standard normal float32 draws from `generator`, as float64 numpy."""
    return torch.randn(*shape, generator=generator, dtype=torch.float32).double().numpy()


def _rodrigues(axis_angles: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3) rotation, float64: I + sin(t) K + (1 - cos(t)) K^2."""
    angle = np.linalg.norm(axis_angles, axis=-1, keepdims=True)
    k = axis_angles / np.maximum(angle, 1e-12)
    cross = np.zeros(axis_angles.shape[:-1] + (3, 3))
    cross[..., 0, 1], cross[..., 0, 2] = -k[..., 2], k[..., 1]
    cross[..., 1, 0], cross[..., 1, 2] = k[..., 2], -k[..., 0]
    cross[..., 2, 0], cross[..., 2, 1] = -k[..., 1], k[..., 0]
    sin, cos = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + sin * cross + (1 - cos) * (cross @ cross)


def _mitten(generator: torch.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """The tube's vertices (778, 3) float64 and faces (1538, 3) int64."""
    t = np.linspace(0.0, 1.0, RINGS)
    taper = np.sqrt(np.clip(1.0 - t ** 8, 0.0, 1.0)) * 0.85 + 0.15
    half_width = (0.030 + 0.020 * np.sin(np.pi * np.clip(t * 1.15, 0, 1))) * taper     # along z
    half_thickness = (0.013 + 0.006 * np.sin(np.pi * t)) * taper                       # along y
    along = -0.005 + 0.19 * t
    angles = 2 * np.pi * np.arange(SEGMENTS) / SEGMENTS
    ring_points = np.zeros((RINGS * SEGMENTS + 1, 3))
    for ring in range(RINGS):
        rows = slice(ring * SEGMENTS, (ring + 1) * SEGMENTS)
        ring_points[rows, 0] = along[ring]
        ring_points[rows, 1] = half_thickness[ring] * np.cos(angles)
        ring_points[rows, 2] = half_width[ring] * np.sin(angles)
    apex = RINGS * SEGMENTS
    ring_points[apex] = [along[-1] + 0.006, 0.0, 0.0]

    triangles = []
    for ring in range(RINGS - 1):
        for k in range(SEGMENTS):
            here, nxt = ring * SEGMENTS, (ring + 1) * SEGMENTS
            a, b = here + k, here + (k + 1) % SEGMENTS
            c, d = nxt + k, nxt + (k + 1) % SEGMENTS
            triangles += [[a, c, d], [a, d, b]]
    last = (RINGS - 1) * SEGMENTS
    triangles += [[last + k, apex, last + (k + 1) % SEGMENTS] for k in range(SEGMENTS)]

    # Centroid splits up to the MANO vertex count, at evenly spaced triangles of the tube.
    points = list(ring_points)
    tube_triangles = len(triangles)
    splits = VERTICES - len(points)
    for n in range(splits):
        which = int((n + 0.5) * tube_triangles / splits)
        a, b, c = triangles[which]
        centre = len(points)
        points.append((np.asarray(points[a]) + points[b] + points[c]) / 3.0)
        triangles[which] = [a, b, centre]
        triangles += [[b, c, centre], [c, a, centre]]
    vertices = np.asarray(points, dtype=np.float64)
    vertices = vertices + 0.0005 * _normal(generator, *vertices.shape)
    return vertices, np.asarray(triangles, dtype=np.int64)


def _relabel_tips(vertices: np.ndarray, faces: np.ndarray, tips: Dict[str, list]):
    """Swaps vertex labels so that the vertex nearest each fingertip position gets smplx's id for that tip."""
    old_at = list(range(VERTICES))        # old_at[new label] = old label
    taken = set()
    for finger, tip_id in FINGERTIPS:
        distance = np.linalg.norm(vertices - np.asarray(tips[finger]), axis=1)
        distance[list(taken)] = np.inf
        nearest = int(np.argmin(distance))
        taken.add(nearest)
        slot = old_at.index(nearest)
        old_at[slot], old_at[tip_id] = old_at[tip_id], old_at[slot]
    old_at = np.asarray(old_at)
    new_label = np.empty(VERTICES, dtype=np.int64)
    new_label[old_at] = np.arange(VERTICES)
    return vertices[old_at], new_label[faces]


def _joint_regressor(vertices: np.ndarray, joints: np.ndarray) -> scipy.sparse.csc_matrix:
    rows, cols, values = [], [], []
    for joint in range(JOINTS):
        distance = np.linalg.norm(vertices - joints[joint], axis=1)
        nearest = np.argsort(distance, kind='stable')[:24]
        weight = np.exp(-(distance[nearest] / 0.015) ** 2)
        rows += [joint] * len(nearest)
        cols += list(nearest)
        values += list(weight / weight.sum())
    return scipy.sparse.csc_matrix((np.asarray(values), (np.asarray(rows), np.asarray(cols))),
                                   shape=(JOINTS, VERTICES), dtype=np.float64)


def _skinning_weights(vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Each vertex's distance to the bone leaving each joint (to its children's mean, or extended for the last
    joint of a finger); softmax of -(d / 12 mm)^2 over the 3 nearest bones, 0 elsewhere."""
    starts, ends = [], []
    for joint in range(JOINTS):
        children = [c for c in range(JOINTS) if PARENTS[c] == joint]
        end = (joints[children].mean(axis=0) if children
               else joints[joint] + 0.6 * (joints[joint] - joints[PARENTS[joint]]))
        starts.append(joints[joint])
        ends.append(end)
    starts, ends = np.asarray(starts), np.asarray(ends)
    bone = ends - starts
    along = np.clip(np.einsum('vjk,jk->vj', vertices[:, None] - starts[None], bone) / (bone ** 2).sum(1), 0, 1)
    closest = starts[None] + along[..., None] * bone[None]
    distance = np.linalg.norm(vertices[:, None] - closest, axis=2)
    logits = -(distance / 0.012) ** 2
    weights = np.zeros_like(distance)
    nearest3 = np.argsort(distance, axis=1, kind='stable')[:, :3]
    for v in range(VERTICES):
        chosen = logits[v, nearest3[v]]
        exp = np.exp(chosen - chosen.max())
        weights[v, nearest3[v]] = exp / exp.sum()
    return weights


def make_mano(seed: int) -> Tuple[dict, Dict[str, np.ndarray]]:
    """(the MANO_RIGHT.pkl dict, the mano_mean_params.npz arrays) of `seed`."""
    generator = _generator(seed, 999_999)
    vertices, faces = _mitten(generator)
    # Rest joints in MANO order: wrist, index 1-3, middle 4-6, pinky 7-9, ring 10-12, thumb 13-15 (m).
    joints = np.array([
        [0.010, 0.000, 0.000],
        [0.095, 0.000, 0.022], [0.128, 0.000, 0.022], [0.152, 0.000, 0.021],
        [0.098, 0.000, 0.002], [0.135, 0.000, 0.002], [0.162, 0.000, 0.002],
        [0.082, 0.000, -0.030], [0.105, 0.000, -0.033], [0.122, 0.000, -0.034],
        [0.092, 0.000, -0.015], [0.125, 0.000, -0.017], [0.150, 0.000, -0.018],
        [0.030, -0.003, 0.028], [0.050, -0.004, 0.036], [0.068, -0.004, 0.040],
    ]) + 0.001 * _normal(generator, JOINTS, 3)
    tips = {'thumb': [0.085, -0.004, 0.045], 'index': [0.172, 0.0, 0.021], 'middle': [0.186, 0.0, 0.002],
            'ring': [0.170, 0.0, -0.018], 'pinky': [0.140, 0.0, -0.034]}
    vertices, faces = _relabel_tips(vertices, faces, tips)
    regressor = _joint_regressor(vertices, joints)
    weights = _skinning_weights(vertices, joints)

    centroid = vertices.mean(axis=0)
    shapedirs = 0.003 * _normal(generator, VERTICES, 3, BETAS)
    shapedirs[:, :, 0] += 0.03 * (vertices - centroid)            # beta 0 scales the hand
    shapedirs[:, 0, 1] += 0.02 * (vertices[:, 0] - centroid[0])   # beta 1 stretches it along x
    posedirs = 0.002 * _normal(generator, VERTICES, 3, POSE_BASIS)
    q, r = np.linalg.qr(_normal(generator, 45, 45))
    components = (q * np.sign(np.diag(r))[None, :]).T
    hands_mean = 0.12 * _normal(generator, 45)
    hands_coeffs = 0.5 * _normal(generator, 1554, 45)

    # The real file's key order and types (its chumpy arrays are plain numpy here).
    mano = {
        'hands_components': components,
        'f': faces.astype(np.uint32),
        'J_regressor': regressor,
        'kintree_table': np.array([[2 ** 32 - 1, *PARENTS[1:]], list(range(JOINTS))], dtype=np.int64),
        'J': np.asarray(regressor @ vertices),
        'bs_style': 'lbs',
        'hands_coeffs': hands_coeffs,
        'weights': weights,
        'posedirs': posedirs,
        'hands_mean': hands_mean,
        'v_template': vertices,
        'shapedirs': shapedirs,
        'bs_type': 'lrotmin',
    }

    # Mean parameters: 6D (first two rotation-matrix columns) of small random rotations plus noise.
    axis_angles = 0.15 * _normal(generator, JOINTS, 3)
    axis_angles[0] = 0.3 * _normal(generator, 3)
    rotations = _rodrigues(axis_angles)
    six_d = np.concatenate([rotations[:, :, 0], rotations[:, :, 1]], axis=1) + 0.02 * _normal(generator, JOINTS, 6)
    mean_params = {'pose': six_d.reshape(-1).astype(np.float64),
                   'shape': (0.3 * _normal(generator, BETAS)).astype(np.float64),
                   'cam': (np.array([0.9, 0.01, -0.02]) + 0.01 * _normal(generator, 3)).astype(np.float64)}
    return mano, mean_params


def mano_buffers(mano: dict) -> Dict[str, torch.Tensor]:
    """The ``mano.*`` buffers of the HAMER state_dict: what smplx 0.1.28's MANO layer registers from the pkl
    (float32; the first 10 shape directions; posedirs (778, 3, 135) -> (135, 2334); root parent -1; 6 PCA
    components; pose_mean = zeros(3) + hands_mean)."""
    def as_f32(value):
        dense = value.toarray() if scipy.sparse.issparse(value) else value
        return torch.tensor(np.array(dense, dtype=np.float32), dtype=torch.float32)

    parents = torch.tensor(np.array(mano['kintree_table'][0], dtype=np.float32)).long()
    parents[0] = -1
    hand_mean = as_f32(mano['hands_mean'])
    tips = torch.tensor([tip for _, tip in FINGERTIPS], dtype=torch.long)
    posedirs = mano['posedirs']
    return {
        'mano.shapedirs': as_f32(mano['shapedirs'][:, :, :BETAS]),
        'mano.faces_tensor': torch.tensor(np.array(mano['f'], dtype=np.int64), dtype=torch.long),
        'mano.v_template': as_f32(mano['v_template']),
        'mano.J_regressor': as_f32(mano['J_regressor']),
        'mano.posedirs': as_f32(np.reshape(posedirs, [-1, posedirs.shape[-1]]).T),
        'mano.parents': parents,
        'mano.lbs_weights': as_f32(mano['weights']),
        'mano.vertex_joint_selector.extra_joints_idxs': tips.clone(),
        'mano.hand_components': as_f32(mano['hands_components'][:PCA_COMPONENTS]),
        'mano.hand_mean': hand_mean,
        'mano.pose_mean': torch.cat([torch.zeros(3), hand_mean]),
        'mano.extra_joints_idxs': tips.clone(),
        'mano.joint_map': torch.tensor(OPENPOSE_ORDER, dtype=torch.long),
    }


# ------------------------------------------------------------------------------------------------ checkpoint

_SMALL_HEAD_OUTPUTS = ('mano_head.decpose.weight', 'mano_head.decshape.weight', 'mano_head.deccam.weight')


def _random_tensor(name: str, shape: Shape, generator: torch.Generator) -> torch.Tensor:
    r = torch.randn(*shape, generator=generator, dtype=torch.float32)
    if len(shape) == 1 and 'norm' in name and name.endswith('.weight'):
        return 1.0 + 0.05 * r
    if len(shape) == 1 and name.endswith('.bias'):
        return 0.02 * r
    if name == 'backbone.pos_embed':
        return 0.02 * r
    if name == 'mano_head.transformer.pos_embedding':
        return r
    if len(shape) >= 2:
        gain = 0.1 if name in _SMALL_HEAD_OUTPUTS else 1.0
        return r * (gain / math.sqrt(int(np.prod(shape[1:]))))
    raise ValueError(f'no rule for {name} {shape}')


def make_state_dict(seed: int, mano: dict, mean_params: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    fixed = mano_buffers(mano)
    fixed['mano_head.init_hand_pose'] = torch.from_numpy(mean_params['pose'].astype(np.float32))[None]
    fixed['mano_head.init_betas'] = torch.from_numpy(mean_params['shape'].astype(np.float32))[None]
    fixed['mano_head.init_cam'] = torch.from_numpy(mean_params['cam'].astype(np.float32))[None]
    fixed['initialized'] = torch.tensor(False)
    state_dict = {}
    for index, (name, shape, dtype) in enumerate(checkpoint_keys()):
        if name in fixed:
            tensor = fixed[name].clone()
        else:
            tensor = _random_tensor(name, shape, _generator(seed, index)).to(dtype).contiguous()
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise AssertionError(f'{name}: built {tuple(tensor.shape)} {tensor.dtype}, expected {shape} {dtype}')
        state_dict[name] = tensor
    return state_dict


def state_dict_sha256(state_dict: Dict[str, torch.Tensor]) -> str:
    """sha256 over each key's name, dtype (e.g. 'torch.float32'), shape (a Python tuple's repr) and raw
    little-endian bytes (bool as one byte), in key order."""
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        if tensor.dtype == torch.bool:
            digest.update(tensor.numpy().astype(np.uint8).tobytes())
        else:
            digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def mano_digests(mano: dict) -> Dict[str, str]:
    """sha256 of each MANO_RIGHT.pkl value as pickled (protocol 2), except 'hands_components': LAPACK's QR
    differs in the last float64 bits between OpenBLAS's CPU kernels (measured: OPENBLAS_CORETYPE=Haswell vs
    SkylakeX on one machine), so that one is hashed after rounding to float32, as the checkpoint holds it."""
    digests = {}
    for key, value in mano.items():
        if key == 'hands_components':
            digests[key] = hashlib.sha256(np.ascontiguousarray(value, dtype=np.float32).tobytes()).hexdigest()
        else:
            digests[key] = hashlib.sha256(pickle.dumps(value, protocol=2)).hexdigest()
    return digests


def write_data_dir(out: Path, seed: int, mano_only: bool = False, hash_checkpoint_file: bool = False) -> dict:
    """Writes the `_DATA` folder of `seed` under `out`; returns what FIXTURE_INFO.json says."""
    out = Path(out)
    (out / 'hamer_ckpts' / 'checkpoints').mkdir(parents=True, exist_ok=True)
    (out / 'data' / 'mano').mkdir(parents=True, exist_ok=True)
    mano, mean_params = make_mano(seed)
    files = {'data/mano/MANO_RIGHT.pkl': lambda path: path.write_bytes(pickle.dumps(mano, protocol=2)),
             'data/mano_mean_params.npz': lambda path: np.savez(path, **mean_params),
             'hamer_ckpts/model_config.yaml': lambda path: path.write_text(MODEL_CONFIG_YAML)}
    info = {'seed': seed, 'generator': 'test/fixture_weights.py', 'torch': torch.__version__, 'files': {},
            'mano_digests': mano_digests(mano)}
    for relative, write in files.items():
        write(out / relative)
        info['files'][relative] = file_sha256(out / relative)
    if not mano_only:
        state_dict = make_state_dict(seed, mano, mean_params)
        checkpoint = out / 'hamer_ckpts' / 'checkpoints' / 'hamer.ckpt'
        torch.save({'state_dict': state_dict, 'epoch': 0, 'global_step': 0,
                    # The procedure's original name, kept so that the file itself is the same too.
                    'fixture': {'seed': seed, 'made_by': 'make_fixture_weights.py'}}, checkpoint)
        info['num_keys'] = len(state_dict)
        info['num_float_elements'] = int(sum(t.numel() for t in state_dict.values() if t.is_floating_point()))
        info['state_dict_sha256'] = state_dict_sha256(state_dict)
        if hash_checkpoint_file:
            info['files']['hamer_ckpts/checkpoints/hamer.ckpt'] = file_sha256(checkpoint)
    (out / 'FIXTURE_INFO.json').write_text(json.dumps(info, indent=1))
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seed', type=int, required=True)
    parser.add_argument('--out', type=Path, required=True, help='folder to fill (laid out like _DATA)')
    parser.add_argument('--mano-only', action='store_true', help='MANO, mean parameters and config only')
    parser.add_argument('--file-hash', action='store_true', help='also hash the 2.6 GB checkpoint file')
    args = parser.parse_args(argv)
    print(json.dumps(write_data_dir(args.out, args.seed, args.mano_only, args.file_hash), indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
