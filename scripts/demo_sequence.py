#!/usr/bin/env python3
"""The ROS pipeline end to end on a short real sequence (`make demo` runs this through scripts/demo.sh).

1. Builds a sequence (default 30 frames, 640x480) from the `bus_man_both` photo of hamer_ros.provisioning.sample_data
   (fetched from a registry package, never committed): the photo moved and scaled a little from frame to frame.
2. Starts the real node executable (`lib/hamer_ros/hamer_node` of the colcon install) with image and
   camera_info remapped to /camera/image_raw and /camera/camera_info, overlays on.
3. Publishes each frame with its CameraInfo over DDS (the node's default best-effort image QoS, with the
   package's Fast DDS profile for frames over 0.5 MB) and waits for the node's answer on /hands/mano before the
   next one (the node keeps only the newest frame, so flooding it would only drop frames).
4. Records /hands/mano, /tf and /hands/markers as they arrive into an MCAP bag (rosbags) and writes the
   /hands/overlay images to the output folder; then reads the bag back and prints a summary.
With HaMeR weights installed the node publishes meshes; without, MediaPipe landmarks only, and the summary says
how to install the weights.

    python scripts/demo_sequence.py [--out out/demo] [--frames 30] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOPICS = {'/hands/mano': 'hamer_ros/msg/HandMeshArray', '/tf': 'tf2_msgs/msg/TFMessage',
          '/hands/markers': 'visualization_msgs/msg/MarkerArray'}
WIDTH, HEIGHT = 640, 480
# Pinhole camera of the demo: a 60-degree horizontal field of view.
FOCAL = WIDTH / 2 / np.tan(np.radians(30))


def make_sequence(photo_bgr: np.ndarray, count: int = 30, width: int = WIDTH, height: int = HEIGHT):
    """`count` frames: the photo drifting left-right and up-down and zooming in and out (one slow cycle),
    on a grey background. Only the photo moves, as if the camera panned; every frame is a real image."""
    import cv2

    h, w = photo_bgr.shape[:2]
    base = min(width / w, height / h) * 0.9
    frames = []
    for k in range(count):
        phase = 2 * np.pi * k / max(count, 1)
        scale = base * (1.0 + 0.08 * np.sin(phase))
        dx, dy = 0.12 * width * np.sin(phase), 0.05 * height * np.sin(2 * phase)
        matrix = np.array([[scale, 0.0, width / 2 + dx - scale * w / 2],
                           [0.0, scale, height / 2 + dy - scale * h / 2]])
        frames.append(cv2.warpAffine(photo_bgr, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=(114, 114, 114)))
    return frames


def node_executable() -> Path:
    from ament_index_python.packages import get_package_prefix

    path = Path(get_package_prefix('hamer_ros')) / 'lib' / 'hamer_ros' / 'hamer_node'
    if not path.is_file():
        raise FileNotFoundError(f'{path} is missing: run scripts/setup_env.sh (colcon build) first')
    return path


def large_images_profile() -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory('hamer_ros')) / 'config' / 'fastdds_large_images.xml'


class Recorder:
    """The demo's ROS side: publishes frames + CameraInfo, records the node's outputs into a bag."""

    def __init__(self, bag_path: Path, overlay_dir: Path):
        import rclpy
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from hamer_ros.io.bag_io import BagWriter

        self.node = rclpy.create_node('hamer_demo')
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, '/camera/image_raw', reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, '/camera/camera_info', reliable)
        self.bag = BagWriter(bag_path, TOPICS)
        self.overlay_dir = overlay_dir
        self.lock = threading.Lock()
        self.answered = {}          # stamp ns -> (receipt ns, serialized HandMeshArray)
        self.frame_index = {}       # stamp ns -> position in the sequence (names the overlay files)
        self.pending_tf = set()     # stamps of frames with hands whose /tf has not arrived yet
        self.overlays = 0
        from hamer_ros.msg import HandMeshArray
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray
        for topic, kind in (('/hands/mano', HandMeshArray), ('/tf', TFMessage), ('/hands/markers', MarkerArray)):
            self.node.create_subscription(kind, topic, self._recorder(topic), reliable, raw=True)
        self.node.create_subscription(Image, '/hands/overlay', self._on_overlay, reliable)

    def _recorder(self, topic):
        from hamer_ros.io import bag_io

        def record(data: bytes) -> None:
            received = time.time_ns()
            with self.lock:
                self.bag.write(topic, data, received)
                message = bag_io.deserialize(data, TOPICS[topic])
                if topic == '/hands/mano':
                    self.answered.setdefault(bag_io.stamp_ns(message.header.stamp), (received, data))
                    if message.hands:
                        self.pending_tf.add(bag_io.stamp_ns(message.header.stamp))
                elif topic == '/tf' and message.transforms:
                    self.pending_tf.discard(bag_io.stamp_ns(message.transforms[0].header.stamp))
        return record

    def tf_complete(self) -> bool:
        """Every frame with hands has had its TF recorded."""
        with self.lock:
            return not self.pending_tf

    def _on_overlay(self, msg) -> None:
        import cv2

        from hamer_ros.ros.image_conversion import image_msg_to_bgr

        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        name = f'{self.frame_index[stamp]:03d}' if stamp in self.frame_index else str(stamp)
        cv2.imwrite(str(self.overlay_dir / f'{name}.jpg'), image_msg_to_bgr(msg))
        self.overlays += 1

    def publish(self, image, stamp_ns: int, index: int) -> None:
        from builtin_interfaces.msg import Time
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import Header

        from hamer_ros.ros.image_conversion import bgr_to_image_msg

        self.frame_index[stamp_ns] = index
        header = Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id='camera_optical_frame')
        info = CameraInfo(header=header, width=image.shape[1], height=image.shape[0], distortion_model='plumb_bob',
                          d=[0.0] * 5, k=[FOCAL, 0.0, WIDTH / 2, 0.0, FOCAL, HEIGHT / 2, 0.0, 0.0, 1.0],
                          r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                          p=[FOCAL, 0.0, WIDTH / 2, 0.0, 0.0, FOCAL, HEIGHT / 2, 0.0, 0.0, 0.0, 1.0, 0.0])
        # Before the first image, CameraInfo a few times: the node's best-effort reader may still be matching ours.
        for _ in range(5 if index == 0 else 1):
            self.info_pub.publish(info)
            if index == 0:
                time.sleep(0.1)
        self.image_pub.publish(bgr_to_image_msg(image, Image(), header))

    def hands_in(self, stamp_ns: int) -> int:
        from hamer_ros.io import bag_io

        with self.lock:
            return len(bag_io.deserialize(self.answered[stamp_ns][1], TOPICS['/hands/mano']).hands)

    def has_answer(self, stamp_ns: int) -> bool:
        with self.lock:
            return stamp_ns in self.answered


def _wait_for(condition, timeout: float, node, out: Path, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if node.poll() is not None:
            raise RuntimeError(f'the node exited with status {node.returncode}: see {out / "node.log"}')
        if time.monotonic() > deadline:
            raise RuntimeError(f'{what} within {timeout:.0f} s: see {out / "node.log"}')
        time.sleep(0.05)


def run_demo(args) -> int:
    import cv2
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from hamer_ros.io import bag_io
    from hamer_ros.provisioning import paths, sample_data, weights

    out = Path(args.out)
    overlay_dir = out / 'overlays'
    overlay_dir.mkdir(parents=True, exist_ok=True)
    for old in overlay_dir.glob('*.jpg'):
        old.unlink()
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else paths.data_dir()
    with_weights = args.small_random or weights.ready(weights.verify(data_dir))
    photo = cv2.imread(str(sample_data.fetch('bus_man_both')), cv2.IMREAD_COLOR)
    frames = make_sequence(photo, args.frames)
    mode = ('small random network (test only: its meshes mean nothing)' if args.small_random else
            f'HaMeR meshes (weights in {data_dir})' if with_weights else
            f'MediaPipe landmarks only: no HaMeR weights in {data_dir}')
    print(f'demo: {len(frames)} frames {WIDTH}x{HEIGHT} made from the bus_man_both photo; {mode}', flush=True)

    # The node's image input is best effort (REP-2003). Fast DDS's default shared-memory segment (0.5 MB) is too
    # small for 640x480 frames (0.9 MB): without the package's large-image profile, in both processes, nearly no
    # frame arrives (config/fastdds_large_images.xml says more).
    os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(large_images_profile()))
    command = [str(node_executable()), '--ros-args', '-r', 'image:=/camera/image_raw',
               '-r', 'camera_info:=/camera/camera_info', '-p', 'publish.overlay:=true',
               '-p', f'data_dir:={data_dir}', '-p', f'threads:={args.threads}']
    if args.small_random:
        command += ['-p', 'model:=small_random']
    log = open(out / 'node.log', 'w')
    node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    rclpy.init()
    recorder = Recorder(out / 'hands', overlay_dir)
    executor = SingleThreadedExecutor()
    executor.add_node(recorder.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    frame_timeout = args.frame_timeout or (120.0 if with_weights and not args.small_random else 15.0)
    published, sent_at = [], {}
    started = time.perf_counter()
    try:
        _wait_for(lambda: recorder.image_pub.get_subscription_count() > 0
                  and recorder.info_pub.get_subscription_count() > 0
                  and recorder.node.count_publishers('/hands/mano') > 0, args.start_timeout, node, out,
                  'the node did not come up on /camera/image_raw, /camera/camera_info and /hands/mano')
        for index, image in enumerate(frames):
            stamp = time.time_ns()
            # The first answer waits for the node's start-up (models loading); the node keeps the frame meanwhile.
            timeout = args.start_timeout if index == 0 else frame_timeout
            now = time.monotonic()
            deadline, resend_at = now + timeout, now + timeout / 4
            recorder.publish(image, stamp, index)
            sent_at[stamp] = time.time_ns()
            while not recorder.has_answer(stamp):
                if node.poll() is not None:
                    raise RuntimeError(f'the node exited with status {node.returncode}: see {out / "node.log"}')
                now = time.monotonic()
                if now > deadline:
                    break
                if now > resend_at:      # best effort: a frame may be lost (rare with the profile)
                    recorder.publish(image, stamp, index)
                    resend_at = now + timeout / 4
                time.sleep(0.005)
            published.append(stamp)
            status = f'{recorder.hands_in(stamp)} hand(s)' if recorder.has_answer(stamp) else 'no answer'
            print(f'  frame {index + 1:3d}/{len(frames)}: {status}', flush=True)
        # TF follows each HandMeshArray; a sample lost on the way is resent by DDS within its heartbeat period.
        deadline = time.monotonic() + 10.0
        while not recorder.tf_complete() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)     # and the last markers and overlay
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.kill()
        log.close()
        executor.shutdown()
        recorder.node.destroy_node()
        rclpy.try_shutdown()
        recorder.bag.close()
    seconds = time.perf_counter() - started
    return summarise(out, published, sent_at, recorder, with_weights and not args.small_random, data_dir, seconds,
                     bag_io)


def summarise(out, published, sent_at, recorder, meshes_expected, data_dir, seconds, bag_io) -> int:
    messages = bag_io.read_bag(out / 'hands')
    counts = {topic: sum(m.topic == topic for m in messages) for topic in TOPICS}
    meshes = {bag_io.stamp_ns(m.message.header.stamp): m for m in messages if m.topic == '/hands/mano'}
    answered = [stamp for stamp in published if stamp in meshes]
    hands = [len(meshes[stamp].message.hands) for stamp in answered]
    sources = {int(h.source) for stamp in answered for h in meshes[stamp].message.hands}
    # The first frame also waits for the node's start-up: reported apart.
    latencies = [(recorder.answered[stamp][0] - sent_at[stamp]) / 1e6 for stamp in answered[1:]]
    first = (recorder.answered[published[0]][0] - sent_at[published[0]]) / 1e6 if published[:1] == answered[:1] \
        else None
    with_mesh = sum(len(h.vertices) > 0 for stamp in answered for h in meshes[stamp].message.hands)
    summary = {
        'frames_published': len(published), 'frames_answered': len(answered), 'seconds': round(seconds, 1),
        'hands_per_frame': {str(n): hands.count(n) for n in sorted(set(hands))},
        'hands_with_mesh': with_mesh, 'hands_total': sum(hands),
        'latency_ms_median': round(float(np.median(latencies)), 1) if latencies else None,
        'latency_ms_max': round(float(np.max(latencies)), 1) if latencies else None,
        'first_frame_ms': round(first, 1) if first is not None else None,
        'bag_messages': counts, 'overlays': len(list((out / 'overlays').glob('*.jpg'))),
        'mode': 'mesh' if with_mesh else 'landmarks_only'}
    (out / 'summary.json').write_text(json.dumps(summary, indent=1))
    print(f'\nframes: {len(published)} published, {len(answered)} answered on /hands/mano '
          f'({len(published) - len(answered)} lost) in {seconds:.0f} s')
    print('hands per frame: ' + ', '.join(f'{n} hand(s) in {c} frame(s)' for n, c in summary['hands_per_frame'].items()))
    if latencies:
        print(f'latency (publish -> /hands/mano received): median {summary["latency_ms_median"]:.0f} ms, '
              f'max {summary["latency_ms_max"]:.0f} ms' + (f'; first frame {first:.0f} ms (with what is left of '
                                                           'the node\'s start-up)' if first is not None else ''))
    print(f'bag {out / "hands"} (MCAP): ' + ', '.join(f'{t} {c}' for t, c in counts.items()))
    print(f'overlays: {summary["overlays"]} images in {out / "overlays"}; node log: {out / "node.log"}')
    if with_mesh:
        print(f'meshes: {with_mesh} of {sum(hands)} hands have a HaMeR mesh')
    else:
        print(f'MediaPipe landmarks only (joints, TF, skeleton markers; no meshes: sources {sorted(sources)}).\n'
              f'For meshes install the HaMeR weights, then run make demo again:\n'
              f'  python -m hamer_ros setup-weights --data-dir {data_dir}        (downloads the official data)\n'
              f'  python -m hamer_ros setup-weights --from hamer_demo_data.tar.gz  (an archive you already have)')
    ok = len(answered) == len(published) and sum(hands) > 0 and (with_mesh > 0 or not meshes_expected)
    if not ok:
        print('demo FAILED: not every frame was answered with hands (see the node log)')
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default=str(ROOT / 'out' / 'demo'), help='output folder (default out/demo)')
    parser.add_argument('--frames', type=int, default=30, help='sequence length (default 30)')
    parser.add_argument('--data-dir', help='HaMeR data folder (default: HAMER_ROS_DATA_DIR or the standard place)')
    parser.add_argument('--threads', type=int, default=2, help='PyTorch threads of the node (default 2)')
    parser.add_argument('--small-random', action='store_true',
                        help='node with the small random network (tests: exercises the mesh path in seconds)')
    parser.add_argument('--start-timeout', type=float, default=180.0, help='seconds for the node to answer '
                        'its first frame (start-up and model loading)')
    parser.add_argument('--frame-timeout', type=float, help='seconds to wait for each later frame')
    args = parser.parse_args(argv)
    try:
        return run_demo(args)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f'demo: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
