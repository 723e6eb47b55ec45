#!/usr/bin/env python3
"""hamer_node's memory across stream restarts, detector rebuilds and two cameras on one topic (issue 13.5, 13.6).

The node runs in its own process (bench_node.py's set-up: scripts/hamer_node of this source tree, its own ROS
domain, config/fastdds_large_images.xml), landmarks-only by default (HaMeR weights missing: MediaPipe only, as in
the issue's report) or with the small random model (--model small). This process plays three scenes, waiting for
the node's answer to each frame before sending the next (no frame is dropped, so every restart is seen):

  restarts   a "bag" of --frames-per-round frames (640x480, two real hands moving), its stamps starting again
             from the same value each round: played --rounds times, i.e. the stamps go backwards rounds - 1 times
             and the node restarts its tracking each time. The node's RSS is printed every 10 rounds.
  rebuilds   detector.min_detection_confidence changed --rebuilds times (0.5 <-> 0.55), a frame after each: each
             change builds a new MediaPipe graph. RSS every 10 changes.
  cameras    --camera-frames frames from two cameras on one topic (clocks 1000 s apart, alternating): the log
             lines about restarts and about two cameras are counted.

    python benchmarks/bench_restarts.py [--rounds 100] [--frames-per-round 20] [--rebuilds 50] [--model landmarks]

Prints the CPU, the load, the RSS curves (MB) and the counts; nothing is compared with a reference.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import bench_node  # noqa: E402  (benchmarks/ on the path)

SECOND = 1_000_000_000


def cpu_model() -> str:
    from hamer_ros.cpu_info import cpu_description

    return cpu_description()[0]


class Player:
    """Publishes bench_node's camera frames with chosen stamps and waits for the node's answer to each."""

    def __init__(self, camera: bench_node.Camera, node: bench_node.NodeProcess):
        self.camera, self.node, self.index = camera, node, 0

    def frame(self, stamp_ns: int, frame_id: str = bench_node.FRAME_ID, timeout: float = 120.0) -> None:
        camera = self.camera
        message = camera.messages[self.index % len(camera.messages)]
        self.index += 1
        for msg in (message, camera.info):
            msg.header.frame_id = frame_id
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, SECOND)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            camera.info_pub.publish(camera.info)
            camera.image_pub.publish(message)
            resend = time.monotonic() + 1.0         # best effort: a frame lost on the way is sent again
            while time.monotonic() < resend:
                with camera._lock:
                    if any(stamp == stamp_ns for stamp, _, _ in camera.record.outputs[-5:]):
                        return
                if not self.node.alive():
                    raise RuntimeError(f'hamer_node exited ({self.node.process.returncode}):\n'
                                       f'{self.node.log_tail()}')
                time.sleep(0.002)
        raise RuntimeError(f'no answer for stamp {stamp_ns} within {timeout:.0f} s:\n{self.node.log_tail()}')


def set_parameter(camera: bench_node.Camera, name: str, value: float) -> None:
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = camera.node.create_client(SetParameters, f'/{bench_node.NAMESPACE}/hamer_node/set_parameters')
    if not client.wait_for_service(timeout_sec=30.0):
        raise RuntimeError('the node\'s parameter service did not appear')
    value_msg = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    future = client.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=value_msg)]))
    deadline = time.monotonic() + 30.0
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.005)
    camera.node.destroy_client(client)
    if not future.done() or not future.result().results[0].successful:
        raise RuntimeError(f'setting {name} = {value} failed')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=100)
    parser.add_argument('--frames-per-round', type=int, default=20)
    parser.add_argument('--rebuilds', type=int, default=50)
    parser.add_argument('--camera-frames', type=int, default=200)
    parser.add_argument('--model', choices=('landmarks', 'small'), default='landmarks')
    bench_node.add_dds_profile_argument(parser)
    args = parser.parse_args()
    bench_node.use_dds_profile(args.dds_profile)

    print(f'CPU: {cpu_model()} ({os.cpu_count()} logical cores); load average at start: '
          f'{" ".join(f"{x:.2f}" for x in os.getloadavg())}')
    no_weights = Path(tempfile.mkdtemp(prefix='bench_restarts_no_weights_'))
    parameters = ({'model': 'hamer', 'data_dir': str(no_weights)}
                  if args.model == 'landmarks' else {'model': 'small_random'})
    parameters.update(diagnostics_period=1.0)
    domain = bench_node.free_domain()
    log_path = Path(tempfile.mkstemp(suffix='.log', prefix='bench_restarts_')[1])
    node = bench_node.NodeProcess(domain, parameters, log_path)
    camera = bench_node.Camera(domain, bench_node.camera_frames())
    player = Player(camera, node)
    try:
        base = 1000 * SECOND
        player.frame(base - SECOND, timeout=300.0)       # models loaded
        print(f'model: {args.model}; node log: {log_path}')

        print(f'\nrestarts: {args.rounds} rounds of {args.frames_per_round} frames, stamps back to the start each '
              f'round')
        print('round  RSS MB  restarts logged')
        started = time.monotonic()
        for round_index in range(1, args.rounds + 1):
            for index in range(args.frames_per_round):
                player.frame(base + index * 33_000_000)
            if round_index == 1 or round_index % 10 == 0 or round_index == args.rounds:
                restarts = log_path.read_text(errors='replace').count('starting tracking afresh')
                print(f'{round_index:5d}  {node.rss_mb():6.0f}  {restarts:15d}')
        frames = args.rounds * args.frames_per_round
        print(f'{frames} frames in {time.monotonic() - started:.1f} s')

        print(f'\nrebuilds: detector.min_detection_confidence changed {args.rebuilds} times, a frame after each')
        print('change  RSS MB')
        stamp = base + 10_000 * SECOND
        print(f'{0:6d}  {node.rss_mb():6.0f}')
        for change in range(1, args.rebuilds + 1):
            set_parameter(camera, 'detector.min_detection_confidence', 0.55 if change % 2 else 0.5)
            stamp += 33_000_000
            player.frame(stamp)
            if change % 10 == 0:
                print(f'{change:6d}  {node.rss_mb():6.0f}')

        print(f'\ncameras: {args.camera_frames} frames from two cameras on one topic (clocks 1000 s apart)')
        log_before = log_path.read_text(errors='replace')
        stamp_a, stamp_b = stamp + SECOND, stamp + 1000 * SECOND
        started = time.monotonic()
        for index in range(args.camera_frames):
            if index % 2 == 0:
                stamp_a += 33_000_000
                player.frame(stamp_a, 'camera_a_optical_frame')
            else:
                stamp_b += 33_000_000
                player.frame(stamp_b, 'camera_b_optical_frame')
        seconds = time.monotonic() - started
        time.sleep(2.5)                 # the next /diagnostics (period 1 s)
        new_log = log_path.read_text(errors='replace')[len(log_before):]
        print(f'{args.camera_frames} frames in {seconds:.1f} s; "starting tracking afresh" logged '
              f'{new_log.count("starting tracking afresh")} times, "two cameras" warning '
              f'{new_log.count("are two cameras publishing on this topic?")} times; RSS {node.rss_mb():.0f} MB')
        with camera._lock:
            print(f'diagnostics "image stamps": {camera.record.diagnostics.get("image stamps", "n/a")}')
    finally:
        camera.close()
        code = node.stop()
        print(f'\nnode exit code {code}; load average at end: {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
