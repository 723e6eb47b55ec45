#!/usr/bin/env python3
"""Per-stage time of one 640x480 camera frame with two hands, as the node processes it (issue 7 §1-2).

The frame: both hands of the bus-man photo pasted on the coffee photo (hamer_ros.provisioning.sample_data; the
composition of
benchmarks/bench_detection.py), arriving as a sensor_msgs/Image (bgr8) with a webcam-like CameraInfo
(fx = fy = 600 px). Stages, each timed on its own over --repeats runs after a warm-up:

    image conversion   Image message -> BGR array (hamer_ros.ros.image_conversion)
    detection          MediaPipe HandLandmarker, IMAGE mode as the node runs it       [MediaPipe: not counted]
    tracking           HandTracker.update
    crop               make_crops for both hands (docs/model.md §6); once more for two close-up hands (400 and 300 px boxes,
                       crop sides over 563 px: the anti-aliasing blur runs), the case a hand near the camera costs
    network            ViT + MANO head, both hands in one batch                      [the ViT: not counted]
    MANO               ManoLayer for both hands
    camera             un-mirroring, cam_crop_to_full, projection (HamerModel._hands), NaN/inf check
    HandMeshArray      building the message / serialising it (rclpy serialize_message = what publish costs)
    MarkerArray        MarkerBuilder.build + the one-block serialisation the node publishes
    TF                 hand_transforms / serialising the TFMessage
    overlay            render_overlay + Image message + serialisation (only with publish.overlay)

"Around the network" sums every stage except MediaPipe and the network (issue 7: budget 10 ms per frame with two
hands). The model is the small-config random model by default, the full-size seed-1 fixture model with --full
(scripts/prepare_test_data.py makes it; the first forward pages the 2.7 GB of weights in). Its random weights
put the meshes anywhere, so for the overlay and markers each mesh is first scaled about its centre to cover its
detection box, as a trained model's mesh would (the cost of drawing depends on the pixels covered).

    python benchmarks/bench_pipeline.py [--full] [--repeats 100] [--model-repeats 3] [--no-process-tuning]

Prints median and spread (10th-90th percentile) in ms per stage and minor page faults per frame around the
network. --no-process-tuning leaves OpenMP and glibc's malloc at their defaults instead of applying
`hamer_ros.runtime_tuning` as the node and the CLI do (compare the two runs: with the checkpoint memory-mapped,
glibc returns the temporaries to the kernel after every call and every frame pays the page faults again).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT = 640, 480
BUDGET_MS = 10.0
CLOSE_UP_CROP = 'crop, 2 close-up hands instead (400 + 300 px boxes)'


def cover_boxes(frame, intrinsics):
    """The frame with each hand's mesh scaled about its centre so its projection is as tall as its box."""
    from dataclasses import replace

    from hamer_ros.hamer.camera import project_points
    hands = []
    for hand in frame.hands:
        recon = hand.reconstruction
        uv = project_points(recon.vertices_camera, intrinsics)
        box = hand.detection.box_xyxy
        factor = (box[3] - box[1]) / max(np.ptp(uv[:, 1]), 1e-6)
        centre = recon.vertices.mean(0)
        hands.append(replace(hand, reconstruction=replace(
            recon, vertices=((recon.vertices - centre) * factor + centre).astype(np.float32),
            keypoints_3d=((recon.keypoints_3d - centre) * factor + centre).astype(np.float32))))
    return replace(frame, hands=hands)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--full', action='store_true', help='the full-size seed-1 fixture model (2.7 GB)')
    parser.add_argument('--data-dir', type=Path, help='HaMeR _DATA folder for --full (default: the seed-1 fixture)')
    parser.add_argument('--repeats', type=int, default=100, help='timed runs per stage (default 100)')
    parser.add_argument('--model-repeats', type=int, default=3, help='timed runs of the full network (default 3)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'int8', 'bf16', 'fp16'),
                        help='int8: CPU only; bf16/fp16: CUDA only')
    parser.add_argument('--no-process-tuning', action='store_true', help='OpenMP and malloc defaults (see above)')
    args = parser.parse_args()

    if not args.no_process_tuning:
        from hamer_ros.runtime_tuning import tune_process
        tune_process()

    import cv2
    import torch
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    import bench_detection
    from bench_render import measure   # (ms per call, page faults per call)
    from hamer_ros.detection import HandDetector
    from hamer_ros.hamer.model import AUTOCAST_DTYPES, HamerModel
    from hamer_ros.hamer.preprocess import make_crops
    from hamer_ros.ros.image_conversion import bgr_to_image_msg, image_msg_to_bgr
    from hamer_ros.ros.markers import MarkerBuilder
    from hamer_ros.pipeline import HandPipeline, faces_by_side, non_finite_fields
    from hamer_ros.io.render import render_overlay
    from hamer_ros.ros.ros_messages import hand_mesh_array, serialize_hand_markers
    from hamer_ros.ros.tf_frames import hand_transforms
    from hamer_ros.detection.tracking import HandTracker
    from hamer_ros.types import CameraIntrinsics

    background = cv2.resize(bench_detection._photo('negative_coffee'), (WIDTH, HEIGHT))
    image = bench_detection.compose(background, bench_detection.hand_patches()[2], 0)
    header = Header(frame_id='camera_color_optical_frame')
    header.stamp.sec = 1
    message = bgr_to_image_msg(image, Image(), header)
    intrinsics = CameraIntrinsics(600.0, 600.0, WIDTH / 2, HEIGHT / 2)

    if args.full:
        from hamer_ros.hamer.checkpoint import CHECKPOINT_IN_DATA_DIR
        sys.path.insert(0, str(ROOT.parent / 'scripts'))
        from prepare_test_data import seed1_dir
        data_dir = args.data_dir or seed1_dir()
        if not (data_dir / CHECKPOINT_IN_DATA_DIR).is_file():
            raise SystemExit(f'{data_dir} has no checkpoint: run python scripts/prepare_test_data.py')
        model = HamerModel.load(data_dir, device=args.device, precision=args.precision, threads=args.threads)
    else:
        model = HamerModel.small_random(seed=0, device=args.device, precision=args.precision, threads=args.threads)
    detector = HandDetector(running_mode='image')
    tracker = HandTracker()
    pipeline = HandPipeline(detector, tracker, model)
    frame = pipeline.process(image, 10 ** 9, intrinsics)
    if len(frame.hands) != 2:
        raise SystemExit(f'MediaPipe found {len(frame.hands)} hands in the benchmark frame, expected 2')
    detections = [hand.detection for hand in frame.hands]
    drawn = cover_boxes(frame, intrinsics)
    faces = faces_by_side(model.faces)
    markers = MarkerBuilder()

    boxes = np.stack([d.box_xyxy for d in detections])
    is_right = np.array([d.is_right for d in detections])
    close_up_boxes = np.array([[0, 40, 400, 440], [330, 100, 630, 400]], dtype=np.float32)   # as if near the lens
    crops, centers, sizes = make_crops(image, boxes, is_right)
    crops_tensor = torch.from_numpy(crops).to(model.device)
    raw = model.forward_crops(crops)
    mano_inputs = [torch.from_numpy(raw[name]).to(model.device) for name in ('global_orient', 'hand_pose', 'betas')]
    clock = iter(range(2, 10 ** 9))

    # as HamerModel runs the network: autocast on CUDA only (CPU bf16 has bf16 weights instead)
    autocast = AUTOCAST_DTYPES.get(args.precision) if model.device.type == 'cuda' else None
    synchronize = torch.cuda.synchronize if model.device.type == 'cuda' else (lambda: None)

    def network():
        with torch.inference_mode(), torch.autocast(model.device.type, dtype=autocast or torch.float32,
                                                    enabled=autocast is not None):
            model.core.network(crops_tensor)
        synchronize()

    def mano():
        with torch.inference_mode():
            model.core.mano(*mano_inputs)
        synchronize()

    def camera():
        for hand in model._hands(raw, centers, sizes, is_right, intrinsics):
            non_finite_fields(hand)

    def overlay():
        serialize_message(bgr_to_image_msg(render_overlay(image, drawn.hands, intrinsics, model.faces), Image(),
                                           header))

    mesh_message = hand_mesh_array(frame, header, faces)
    tf_message = TFMessage(transforms=hand_transforms(frame, header))
    repeats = args.repeats
    # name, function, repeats, counted in the budget
    stages = [
        ('image conversion', lambda: image_msg_to_bgr(message), repeats, True),
        ('detection (MediaPipe)', lambda: detector.detect(image), max(10, repeats // 4), False),
        ('tracking', lambda: tracker.update(list(detections), next(clock) / 30), repeats, True),
        ('crop (2 hands)', lambda: make_crops(image, boxes, is_right), repeats, True),
        (CLOSE_UP_CROP, lambda: make_crops(image, close_up_boxes, is_right), repeats, False),
        (f'network (2 crops, {args.precision})', network, args.model_repeats if args.full else repeats, False),
        ('MANO (2 hands)', mano, repeats, True),
        ('camera + NaN check', camera, repeats, True),
        ('HandMeshArray build', lambda: hand_mesh_array(frame, header, faces), repeats, True),
        ('HandMeshArray serialize', lambda: serialize_message(mesh_message), repeats, True),
        ('MarkerArray build + serialize', lambda: serialize_hand_markers(markers.build(drawn, header, faces)),
         repeats, True),
        ('TF build', lambda: hand_transforms(frame, header), repeats, True),
        ('TFMessage serialize', lambda: serialize_message(tf_message), repeats, True),
        ('overlay render + Image + serialize', overlay, max(10, repeats // 2), None),
    ]
    model_label = (('full-size seed-1 fixture' if args.full else 'small-config random')
                   + f' model, {args.precision} on {model.device}')
    print(f'# pipeline stages, {WIDTH}x{HEIGHT}, 2 hands ({", ".join(d.side for d in detections)}; boxes '
          f'{", ".join("%dx%d px" % (d.box_xyxy[2] - d.box_xyxy[0], d.box_xyxy[3] - d.box_xyxy[1]) for d in detections)})'
          f'; {model_label}; {torch.get_num_threads()} torch threads')
    print(f'# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average '
          f'{os.getloadavg()[0]:.2f}; process tuning {"off" if args.no_process_tuning else "on"}')
    print('| stage | median ms | p10 - p90 ms | faults/call | n | in budget |')
    print('|---|---:|---:|---:|---:|---|')
    medians = {}
    budget_faults = 0.0
    for name, function, count, counted in stages:
        times, faults = measure(function, count, warmup=1 if 'network' in name and args.full else 3)
        p10, p50, p90 = np.percentile(times, [10, 50, 90])
        medians[name] = (p50, counted)
        if counted:
            budget_faults += faults
        mark = {True: 'yes', False: 'no', None: 'optional'}[counted]
        print(f'| {name} | {p50:.3f} | {p10:.3f} - {p90:.3f} | {faults:.0f} | {count} | {mark} |')
    around = sum(ms for ms, counted in medians.values() if counted)
    overlay_ms = sum(ms for ms, counted in medians.values() if counted is None)
    print(f'\naround the network (sum of medians, excl. MediaPipe and the network): {around:.2f} ms '
          f'({"within" if around < BUDGET_MS else "OVER"} the {BUDGET_MS:.0f} ms budget), '
          f'{budget_faults:.0f} page faults per frame')
    print(f'  + overlay (publish.overlay): {around + overlay_ms:.2f} ms')
    close_up = around - medians['crop (2 hands)'][0] + medians[CLOSE_UP_CROP][0]
    print(f'  with two close-up hands instead (blurred crops): {close_up:.2f} ms')

    whole, _ = measure(lambda: pipeline.process(image, next(clock) * 33_333_333, intrinsics),
                       args.model_repeats if args.full else max(10, repeats // 4), warmup=1)
    print(f'HandPipeline.process (detect + track + HaMeR) median {np.median(whole):.1f} ms '
          f'(p10-p90 {np.percentile(whole, 10):.1f}-{np.percentile(whole, 90):.1f})')
    detector.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
