#!/usr/bin/env python3
"""Cost of the node's messages for one frame with two hands, and why the mesh markers skip Point objects.

A TRIANGLE_LIST mesh marker holds 3 x 1552 = 4656 geometry_msgs/Point per hand. Built the ordinary way (one Point
object per corner, then rclpy converts each one when publishing) that costs milliseconds; the node instead lets
rclpy serialise the marker with one placeholder point and splices the (N, 3) float64 block into the bytes
(`hamer_ros.ros.ros_messages.serialize_hand_markers`). This script times both ways, plus HandMeshArray and TF, on the
outputs of the small-config model for two hands (the data do not change the cost).

    python benchmarks/bench_ros_messages.py [--repeats 200]

Prints median and 10th-90th percentile per step (ms). `benchmarks/bench_pipeline.py` puts the same builders in
the per-frame budget with every other stage.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _two_hands():
    from hamer_ros.detection import detections_from_boxes
    from hamer_ros.hamer.model import HamerModel
    from hamer_ros.pipeline import HandPipeline
    from hamer_ros.types import CameraIntrinsics

    model = HamerModel.small_random(seed=0)
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    detections = detections_from_boxes([[200, 150, 280, 250], [380, 160, 450, 260]], ['left', 'right'])
    for track_id, detection in enumerate(detections):
        detection.track_id = track_id
    frame = HandPipeline(None, None, model).process(image, 1, CameraIntrinsics(600.0, 600.0, 320.0, 240.0),
                                                    detections=detections)
    assert len(frame.hands) == 2
    return frame, model


def _time(function, repeats: int):
    function()          # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1e3)
    return np.median(samples), np.percentile(samples, 10), np.percentile(samples, 90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=200)
    args = parser.parse_args()

    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from hamer_ros.ros.markers import MarkerBuilder
    from hamer_ros.pipeline import faces_by_side
    from hamer_ros.ros.ros_messages import fast_markers_work, hand_mesh_array, serialize_hand_markers
    from hamer_ros.ros.tf_frames import hand_transforms

    frame, model = _two_hands()
    faces = faces_by_side(model.faces)
    header = Header(frame_id='camera_optical_frame')
    builder = MarkerBuilder()
    mesh_message = hand_mesh_array(frame, header, faces)
    tf_message = TFMessage(transforms=hand_transforms(frame, header))
    slow_repeats = max(10, args.repeats // 10)
    steps = [
        ('HandMeshArray build', lambda: hand_mesh_array(frame, header, faces), args.repeats),
        ('HandMeshArray serialize', lambda: serialize_message(mesh_message), args.repeats),
        ('markers build (points as arrays)', lambda: builder.build(frame, header, faces), args.repeats),
        ('markers build + one-block serialize (node)',
         lambda: serialize_hand_markers(builder.build(frame, header, faces)), args.repeats),
        ('markers build + Point objects', lambda: builder.build(frame, header, faces).filled(), slow_repeats),
        ('markers build + Point objects + serialize',
         lambda: serialize_message(builder.build(frame, header, faces).filled()), slow_repeats),
        ('TF build (42 transforms)', lambda: hand_transforms(frame, header), args.repeats),
        ('TFMessage serialize', lambda: serialize_message(tf_message), args.repeats),
    ]
    print(f'# messages of one frame with two hands; {platform.machine()}, {platform.python_version()}; '
          f'one-block marker path usable here: {fast_markers_work()}')
    print('| step | median ms | p10 - p90 ms | n |')
    print('|---|---:|---:|---:|')
    for name, function, repeats in steps:
        median, p10, p90 = _time(function, repeats)
        print(f'| {name} | {median:.3f} | {p10:.3f} - {p90:.3f} | {repeats} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
