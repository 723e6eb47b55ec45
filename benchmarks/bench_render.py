#!/usr/bin/env python3
"""Overlay rendering time per frame (issue 7: everything around the network < 10 ms with two hands).

Two MANO hands (a right one and its mirror image as the left one, 778 vertices / 1552 faces each with the
closed wrist) in front of a 640x480 webcam-like camera (fx = fy = 600 px), at a depth that makes each hand
about --hand-px pixels tall. Cases: the full overlay (`render_overlay`: meshes, smooth or flat shading, labels),
with the side view, the landmarks-only drawing (`render_landmarks`), and the bare rasteriser.

    python benchmarks/bench_render.py                    # MANO from the data folder or the test fixture
    python benchmarks/bench_render.py --mano MANO_RIGHT.pkl --hand-px 150 300 --repeats 300

Prints one row per case and hand size: median and spread (10th-90th percentile, min) in milliseconds, and
the minor page faults per call. Faults mean glibc hands NumPy's temporaries (> its mmap threshold, 128 KiB
until raised by a large free) back to the kernel after each call, so every call maps fresh zeroed pages;
whether that happens depends on the process's allocation history (it does after loading a checkpoint
memory-mapped). `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=67108864` in the environment removes it.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamer_ros.io import render  # noqa: E402
from hamer_ros.provisioning import paths
from hamer_ros.cli.mano_to_obj import add_mano_source_arguments, load_mano_from_args, template_hand  # noqa: E402
from hamer_ros.cli.view_mano import upright_view  # noqa: E402
from hamer_ros.hamer.camera import project_points  # noqa: E402
from hamer_ros.hamer.mano import closed_faces  # noqa: E402
from hamer_ros.types import CameraIntrinsics, HandDetection, HandReconstruction, HandResult  # noqa: E402

WIDTH, HEIGHT = 640, 480
CAMERA = CameraIntrinsics(600.0, 600.0, WIDTH / 2, HEIGHT / 2)


def make_hand(vertices, keypoints, side, centre_px, hand_px) -> HandResult:
    """A HandResult whose mesh is `vertices` (hand frame, upright) placed to be `hand_px` tall at `centre_px`."""
    height_m = np.ptp(vertices[:, 1])
    depth = CAMERA.fy * height_m / hand_px
    cam_t = np.array([(centre_px[0] - CAMERA.cx) * depth / CAMERA.fx,
                      (centre_px[1] - CAMERA.cy) * depth / CAMERA.fy, depth])
    uv = project_points(vertices + cam_t, CAMERA)
    box = np.concatenate([uv.min(0), uv.max(0)])
    reconstruction = HandReconstruction(
        is_right=side == 'right', pred_cam=np.zeros(3), global_orient=np.eye(3),
        hand_pose=np.tile(np.eye(3), (15, 1, 1)), betas=np.zeros(10), vertices=vertices, keypoints_3d=keypoints,
        cam_t=cam_t, keypoints_2d=project_points(keypoints + cam_t, CAMERA),
        joint_rotations=np.tile(np.eye(3), (16, 1, 1)), box_center=(box[:2] + box[2:]) / 2,
        box_size=float(np.max(box[2:] - box[:2])), focal_length=np.array([CAMERA.fx, CAMERA.fy]))
    detection = HandDetection(box, side, score=0.98, track_id=0 if side == 'right' else 1,
                              landmarks_2d=reconstruction.keypoints_2d)
    return HandResult(detection, reconstruction)


def two_hands(mano, hand_px):
    vertices, keypoints = template_hand(mano, [])
    rotation = upright_view(keypoints, 'back')
    centre = vertices.mean(0)
    vertices, keypoints = (vertices - centre) @ rotation.T, (keypoints - centre) @ rotation.T
    mirror = np.array([-1.0, 1.0, 1.0])   # left hands are mirrored right hands (docs/model.md §7)
    return [make_hand(vertices, keypoints, 'right', (WIDTH * 0.3, HEIGHT * 0.5), hand_px),
            make_hand(vertices * mirror, keypoints * mirror, 'left', (WIDTH * 0.7, HEIGHT * 0.5), hand_px)]


def measure(function, repeats, warmup=10):
    """Milliseconds per call (repeats,) and minor page faults per call."""
    for _ in range(warmup):
        function()
    times = np.empty(repeats)
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(repeats):
        start = time.perf_counter()
        function()
        times[i] = time.perf_counter() - start
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / repeats
    return times * 1e3, faults


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mano_source_arguments(parser)
    parser.add_argument('--hand-px', type=int, nargs='+', default=[200, 400],
                        help='hand heights in pixels to measure (default: 200 400)')
    parser.add_argument('--repeats', type=int, default=200, help='timed runs per case (default 200)')
    args = parser.parse_args(argv)
    if not any((args.mano, args.checkpoint, args.data_dir)):
        fixture = paths.test_data_dir() / 'fixtures' / 'seed1' / '_DATA'
        if not (paths.data_dir() / 'data' / 'mano').is_dir() and fixture.is_dir():
            args.data_dir = fixture   # the synthetic MANO: same vertex and face counts as the real one
    mano = load_mano_from_args(args)
    faces = mano.faces
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)

    print(f'# render benchmark: {WIDTH}x{HEIGHT}, two hands (2 x 778 vertices, 2 x {len(closed_faces(faces))} '
          f'faces), {args.repeats} runs per case')
    print(f'# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, '
          f'MANO: {mano.source}')
    print(f'| {"case":<36} | hand px | covered px | median ms | p10 ms | p90 ms | min ms | faults/call |')
    print(f'|{"-" * 38}|---------|------------|-----------|--------|--------|--------|-------------|')
    for hand_px in args.hand_px:
        hands = two_hands(mano, hand_px)
        meshes = render.hand_meshes(hands, faces)
        vertices = np.concatenate([m[0] for m in meshes])
        all_faces = np.concatenate([meshes[0][1], meshes[1][1] + len(meshes[0][0])])
        points_2d = project_points(vertices, CAMERA)
        covered = len(render.rasterize(points_2d, 1 / vertices[:, 2], all_faces, WIDTH, HEIGHT).pixel)
        cases = {
            'render_overlay (smooth, labels)': lambda: render.render_overlay(image, hands, CAMERA, faces),
            'render_overlay (flat, labels)': lambda: render.render_overlay(image, hands, CAMERA, faces,
                                                                            shading='flat'),
            'render_overlay + side view': lambda: render.render_overlay(image, hands, CAMERA, faces,
                                                                         side_view=True),
            'render_landmarks (skeletons, labels)': lambda: render.render_landmarks(image, hands, CAMERA),
            'rasterize only': lambda: render.rasterize(points_2d, 1 / vertices[:, 2], all_faces, WIDTH, HEIGHT),
        }
        for name, function in cases.items():
            t, faults = measure(function, args.repeats)
            print(f'| {name:<36} | {hand_px:>7} | {covered:>10} | {np.median(t):>9.2f} | '
                  f'{np.percentile(t, 10):>6.2f} | {np.percentile(t, 90):>6.2f} | {t.min():>6.2f} | {faults:>11.0f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
