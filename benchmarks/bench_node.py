#!/usr/bin/env python3
"""hamer_node end to end over DDS: a camera at --rate Hz in, hand meshes out (issue 7 §1).

The node runs in its own process (scripts/hamer_node of this source tree, as `ros2 run` starts it, with
config/hamer.yaml + the model's parameters) on a ROS domain of its own. This process plays the camera: 640x480 bgr8 frames of two real hands (the composition of
bench_detection.py, moving 2 px per frame so MediaPipe's tracking is engaged) plus a matching CameraInfo, stamped
with the wall clock at publishing, best effort like a camera driver. It records every hands/mano message and the
node's /diagnostics, and samples the node's RSS (/proc/<pid>/status) and CPU time.

    python benchmarks/bench_node.py [--models small full] [--rate 30] [--duration 60]

Per model: input and output rate, stamp-to-receive latency (publish stamp -> HandMeshArray arriving here:
includes the delivery to this process, < 1 ms), the node's own stamp-to-publish latency from /diagnostics,
frames dropped by the node because it was busy (its latest-frame slot), frames lost before the node (sent but
never received: best-effort transport), hands per output, RSS at start/end and its peak, CPU use.
`small`: the small-config random model (model:=small_random); `full`: the full-size seed-1 fixture checkpoint
(scripts/prepare_test_data.py). A warm-up (until the first output, then --warmup s) is not counted.

DDS transport: both processes use config/fastdds_large_images.xml (a large shared-memory segment) unless
--dds-profile none. With Fast DDS's defaults, best-effort 640x480 frames are mostly lost between processes on this
machine (measured: 9-25 of 300 frames reached an idle subscriber at 30 Hz; 40 % never reached the node): the
benchmark would measure the transport, not the node.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

WIDTH, HEIGHT = 640, 480
FRAME_ID = 'bench_camera_optical_frame'
K = (600.0, 0.0, WIDTH / 2, 0.0, 600.0, HEIGHT / 2, 0.0, 0.0, 1.0)
NAMESPACE = 'bench'
VARIANTS = 30     # distinct frames, cycled; 2 px apart
DEFAULT_DDS_PROFILE = ROOT / 'config' / 'fastdds_large_images.xml'


def camera_frames() -> List[np.ndarray]:
    """Two real hands on a real background, shifted 2 px per frame and back (no jump when cycling)."""
    import cv2

    import bench_detection
    background = cv2.resize(bench_detection._photo('negative_coffee'), (WIDTH, HEIGHT))
    patch = bench_detection.hand_patches()[2]
    shifts = list(range(0, VARIANTS, 2)) + list(range(VARIANTS, 0, -2))
    return [bench_detection.compose(background, patch, shift) for shift in shifts]


def add_dds_profile_argument(parser) -> None:
    parser.add_argument('--dds-profile', default=str(DEFAULT_DDS_PROFILE),
                        help='Fast DDS XML profile for both processes, or none (default: %(default)s)')


def use_dds_profile(profile: str) -> None:
    """Set for this process (before rclpy.init) and inherited by the node's."""
    if profile != 'none':
        os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(Path(profile).resolve())
    else:
        os.environ.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)


def free_domain() -> int:
    taken = os.environ.get('ROS_DOMAIN_ID')
    return random.SystemRandom().choice([d for d in range(1, 101) if str(d) != taken])


class NodeProcess:
    """hamer_node from this source tree in a process of its own; RSS/CPU from /proc."""

    def __init__(self, domain: int, parameters: Dict[str, object], log_path: Path):
        import yaml
        self.params_file = Path(tempfile.mkstemp(suffix='.yaml', prefix='bench_node_')[1])
        self.params_file.write_text(yaml.safe_dump({'/**': {'ros__parameters': parameters}}))
        self.log_path = log_path
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED='1',
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
        command = [sys.executable, str(ROOT / 'scripts' / 'hamer_node'), '--ros-args',
                   '--params-file', str(ROOT / 'config' / 'hamer.yaml'), '--params-file', str(self.params_file),
                   '-r', f'__ns:=/{NAMESPACE}']
        with open(log_path, 'wb') as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        self.ticks = os.sysconf('SC_CLK_TCK')

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_mb(self) -> Optional[float]:
        try:
            for line in Path(f'/proc/{self.process.pid}/status').read_text().splitlines():
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> Optional[float]:
        try:
            fields = Path(f'/proc/{self.process.pid}/stat').read_text().rsplit(')', 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self.ticks     # utime + stime

    def stop(self) -> Optional[int]:
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.params_file.unlink(missing_ok=True)
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        return '\n'.join(self.log_path.read_text(errors='replace').splitlines()[-lines:])


@dataclass
class Record:
    sent: List[tuple] = field(default_factory=list)         # (stamp ns, send time ns)
    outputs: List[tuple] = field(default_factory=list)      # (stamp ns, receive time ns, hands)
    rss: List[tuple] = field(default_factory=list)          # (time s, MB)
    lateness_ms: List[float] = field(default_factory=list)  # how late each frame left here (this process starved)
    diagnostics: Dict[str, str] = field(default_factory=dict)


class Camera:
    """This process's side: publishes the camera, collects the node's outputs, samples the node's memory."""

    def __init__(self, domain: int, frames: List[np.ndarray]):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from hamer_ros.ros.image_conversion import bgr_to_image_msg
        from hamer_ros.msg import HandMeshArray

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node('bench_camera', namespace=f'/{NAMESPACE}', context=self.context)
        sensor = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                            durability=DurabilityPolicy.VOLATILE)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        self.image_pub = self.node.create_publisher(Image, 'image', sensor)
        self.info_pub = self.node.create_publisher(CameraInfo, 'camera_info', sensor)
        self.node.create_subscription(HandMeshArray, 'hands/mano', self._on_mano, reliable)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.messages = [bgr_to_image_msg(frame, Image()) for frame in frames]
        self.info = CameraInfo(width=WIDTH, height=HEIGHT, k=list(K), distortion_model='plumb_bob',
                               d=[0.0] * 5, p=[K[0], 0.0, K[2], 0.0, 0.0, K[4], K[5], 0.0, 0.0, 0.0, 1.0, 0.0])
        self.record = Record()
        self._lock = threading.Lock()
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()
        self.sequence = 0

    def _on_mano(self, msg) -> None:
        received = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._lock:
            self.record.outputs.append((stamp, received, len(msg.hands)))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f'/{NAMESPACE}/') or status.name.startswith('hamer_node'):
                with self._lock:
                    self.record.diagnostics = {kv.key: kv.value for kv in status.values}

    def publish(self) -> int:
        """One frame + CameraInfo stamped now; returns the stamp (ns)."""
        message = self.messages[self.sequence % len(self.messages)]
        self.sequence += 1
        now = time.time_ns()
        for msg in (message, self.info):
            msg.header.frame_id = FRAME_ID
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        self.info_pub.publish(self.info)
        self.image_pub.publish(message)
        with self._lock:
            self.record.sent.append((now, time.time_ns()))
        return now

    def take(self) -> Record:
        """The record so far; a fresh one continues."""
        with self._lock:
            record, self.record = self.record, Record(diagnostics=dict(self.record.diagnostics))
        return record

    def close(self) -> None:
        import rclpy
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def drive(camera: Camera, node: NodeProcess, rate_hz: float, seconds: float, rss_period: float = 1.0,
          on_tick=None, tail: float = 2.0) -> Record:
    """Publishes at `rate_hz` for `seconds` on absolute deadlines (no drift), sampling RSS every `rss_period`,
    then waits `tail` s for the last outputs."""
    camera.take()
    period = 1.0 / rate_hz
    start = time.monotonic()
    next_frame, next_rss, rss = start, start, []
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        if not node.alive():
            raise RuntimeError(f'hamer_node exited ({node.process.returncode}):\n{node.log_tail()}')
        if now >= next_rss:
            rss.append((now - start, node.rss_mb()))
            next_rss += rss_period
            if on_tick is not None:
                on_tick(now - start)
        if now >= next_frame:
            camera.publish()
            camera.record.lateness_ms.append((now - next_frame) * 1e3)
            next_frame += period
            if next_frame < now:           # we fell behind (machine busy): skip, do not burst
                next_frame = now + period
        time.sleep(max(0.0, min(next_frame, next_rss) - time.monotonic()))
    time.sleep(tail)                        # the last frames' outputs
    record = camera.take()
    record.rss = rss
    return record


def warm_up(camera: Camera, node: NodeProcess, rate_hz: float, seconds: float, timeout: float = 300.0) -> float:
    """Frames until the node answers (models loaded), then `seconds` more at full rate; returns the start-up time."""
    start = time.monotonic()
    while not camera.record.outputs:
        if not node.alive():
            raise RuntimeError(f'hamer_node exited ({node.process.returncode}):\n{node.log_tail()}')
        if time.monotonic() - start > timeout:
            raise RuntimeError(f'no output from hamer_node within {timeout:.0f} s:\n{node.log_tail()}')
        camera.publish()
        time.sleep(0.2)
    first_output = time.monotonic() - start
    drive(camera, node, rate_hz, seconds, tail=0.0)
    return first_output


def summarize(record: Record, seconds: float) -> Dict[str, float]:
    stamps = np.array([o[0] for o in record.outputs], dtype=np.int64)
    latency_ms = np.array([(o[1] - o[0]) / 1e6 for o in record.outputs])
    sent_stamps = {s for s, _ in record.sent}
    answered = [s for s in stamps if s in sent_stamps]
    return {
        'sent': len(record.sent), 'outputs': len(record.outputs), 'answered': len(answered),
        'input_hz': len(record.sent) / seconds, 'output_hz': len(answered) / seconds,
        'latency_p50_ms': float(np.percentile(latency_ms, 50)) if len(latency_ms) else float('nan'),
        'latency_p99_ms': float(np.percentile(latency_ms, 99)) if len(latency_ms) else float('nan'),
        'latency_max_ms': float(latency_ms.max()) if len(latency_ms) else float('nan'),
        'hands_mean': float(np.mean([o[2] for o in record.outputs])) if record.outputs else 0.0,
        'monotonic': bool(np.all(np.diff(stamps) > 0)),
        'camera_late_p99_ms': float(np.percentile(record.lateness_ms, 99)) if record.lateness_ms else float('nan'),
        'camera_late_max_ms': float(max(record.lateness_ms)) if record.lateness_ms else float('nan'),
    }


MODEL_PARAMETERS = {
    'small': {'model': 'small_random', 'device': 'cpu'},
    'full': {'model': 'hamer', 'device': 'cpu'},     # data_dir: the seed-1 fixture, filled in below
}   # device/precision: --device/--precision


def run_model(name: str, args, frames, log_dir: Path) -> Dict[str, object]:
    parameters = dict(MODEL_PARAMETERS[name], device=args.device, precision=args.precision,
                      **{'publish.overlay': bool(args.overlay)})
    if name == 'full':
        sys.path.insert(0, str(ROOT / 'scripts'))
        from prepare_test_data import seed1_dir
        parameters['data_dir'] = str(args.data_dir or seed1_dir())
    domain = free_domain()
    node = NodeProcess(domain, parameters, log_dir / f'hamer_node_{name}.log')
    camera = Camera(domain, frames)
    try:
        startup = warm_up(camera, node, args.rate, args.warmup)
        cpu_before = node.cpu_seconds()
        record = drive(camera, node, args.rate, args.duration)
        cpu = (node.cpu_seconds() - cpu_before) / args.duration
        time.sleep(1.5)                        # one more diagnostics period
        diagnostics = dict(camera.record.diagnostics or record.diagnostics)
        total_sent = camera.sequence
    finally:
        camera.close()
        code = node.stop()
    summary = summarize(record, args.duration)
    rss = [mb for _, mb in record.rss if mb is not None]
    summary.update(startup_s=startup, cpu_percent=100 * cpu, rss_start_mb=rss[0], rss_end_mb=rss[-1],
                   rss_peak_mb=max(rss), exit_code=code, diagnostics=diagnostics, rss_series=record.rss,
                   total_sent=total_sent)
    return summary


def print_report(results: Dict[str, Dict[str, object]], args) -> None:
    print(f'\n# hamer_node over DDS: {WIDTH}x{HEIGHT} bgr8 at {args.rate:g} Hz for {args.duration:g} s per model '
          f'(after warm-up), two hands in view; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; '
          f'Fast DDS profile: {args.dds_profile}')
    print('| model | start-up s | in Hz | out Hz | latency p50 / p99 / max ms | node p50 ms | not answered | '
          'node: processed / dropped busy / lost before it (since start) | hands/output | stamps increasing | '
          'RSS start / end / peak MB | CPU % |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|')
    for name, r in results.items():
        d = r['diagnostics']
        processed = int(d.get('frames processed', 0) or 0)
        busy = int(d.get('frames dropped (busy)', 0) or 0)
        bad = int(d.get('bad images', 0) or 0) + int(d.get('frames failed', 0) or 0)
        lost = max(0, r['total_sent'] - processed - busy - bad)   # never reached the node's callback
        print(f'| {name} | {r["startup_s"]:.1f} | {r["input_hz"]:.1f} | {r["output_hz"]:.2f} | '
              f'{r["latency_p50_ms"]:.1f} / {r["latency_p99_ms"]:.1f} / {r["latency_max_ms"]:.1f} | '
              f'{d.get("latency p50 (ms)", "n/a")} | {r["sent"] - r["answered"]} of {r["sent"]} | '
              f'{processed} / {busy} / {lost} of {r["total_sent"]} | {r["hands_mean"]:.2f} | '
              f'{"yes" if r["monotonic"] else "NO"} | {r["rss_start_mb"]:.0f} / {r["rss_end_mb"]:.0f} / '
              f'{r["rss_peak_mb"]:.0f} | {r["cpu_percent"]:.0f} |')
    print('(latency spikes come with this machine\'s load: the camera side here, a plain loop, left its frames '
          'up to ' + ', '.join(f'{n} {r["camera_late_max_ms"]:.0f} ms (p99 {r["camera_late_p99_ms"]:.0f})'
                               for n, r in results.items()) + ' late)')
    for name, r in results.items():
        stages = {k: v for k, v in r['diagnostics'].items() if k.startswith('stage ')}
        print(f'{name}: node stages (last frame): ' + ', '.join(f'{k[6:]} {v}' for k, v in stages.items()))
        series = r['rss_series']
        step = max(1, len(series) // 10)
        print(f'{name}: RSS over time (s: MB): ' + ', '.join(f'{t:.0f}: {mb:.0f}' for t, mb in series[::step]
                                                                if mb is not None))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', choices=tuple(MODEL_PARAMETERS), default=['small', 'full'])
    parser.add_argument('--rate', type=float, default=30.0, help='camera rate in Hz (default 30)')
    parser.add_argument('--duration', type=float, default=60.0, help='measured seconds per model (default 60)')
    parser.add_argument('--warmup', type=float, default=5.0, help='seconds at full rate before measuring')
    parser.add_argument('--overlay', action='store_true', help='also publish hands/overlay')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='the node\'s device parameter')
    parser.add_argument('--precision', default='fp32', help='the node\'s precision parameter (bf16/fp16 on cuda)')
    parser.add_argument('--data-dir', type=Path, help='HaMeR _DATA for `full` (default: the seed-1 fixture)')
    parser.add_argument('--log-dir', type=Path, default=Path(tempfile.gettempdir()), help='node logs go here')
    add_dds_profile_argument(parser)
    args = parser.parse_args()
    use_dds_profile(args.dds_profile)
    frames = camera_frames()
    results = {}
    for name in args.models:
        print(f'[bench_node] {name}: starting hamer_node ...', flush=True)
        results[name] = run_model(name, args, frames, args.log_dir)
    print_report(results, args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
