"""The README's main-job command: scripts/demo.sh runs the real node over DDS on a real sequence, records its
outputs to an MCAP bag and writes overlays; the bag is read back here."""
import json
import subprocess

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='the demo needs the colcon-built ROS environment: . scripts/env.sh')

from hamer_ros.io import bag_io  # noqa: E402

from offline_helpers import ROOT, demo_module  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.mediapipe]


def _bag(folder):
    messages = bag_io.read_bag(folder / 'hands')
    return {topic: [m.message for m in messages if m.topic == topic] for topic in ('/hands/mano', '/tf',
                                                                                 '/hands/markers')}


def test_sequence_is_the_photo_moving(sample_photo):
    import cv2

    photo = cv2.imread(str(sample_photo('bus_man_both')))
    frames = demo_module().make_sequence(photo, 8)
    assert len(frames) == 8 and all(f.shape == (480, 640, 3) for f in frames)
    assert all(np.abs(a.astype(int) - b).mean() > 5 for a, b in zip(frames, frames[1:])), 'each frame moves'


@pytest.mark.slow
def test_demo_script_without_weights(tmp_path):
    out = tmp_path / 'demo'
    result = subprocess.run([str(ROOT / 'scripts' / 'demo.sh'), '--out', str(out), '--data-dir',
                             str(tmp_path / 'no_weights')], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'frames: 30 published, 30 answered on /hands/mano (0 lost)' in result.stdout
    assert 'python -m hamer_ros setup-weights' in result.stdout, 'says how to install the weights'
    topics = _bag(out)
    meshes = topics['/hands/mano']
    assert len(meshes) == 30
    stamps = [bag_io.stamp_ns(m.header.stamp) for m in meshes]
    assert stamps == sorted(stamps) and len(set(stamps)) == 30
    hands = [h for m in meshes for h in m.hands]
    assert sum(len(m.hands) == 2 for m in meshes) >= 20, 'both hands of the photo in most frames'
    assert {h.source for h in hands} == {1} and all(len(h.vertices) == 0 for h in hands), 'landmarks only'
    assert all(m.intrinsics_from_camera_info and m.fx == pytest.approx(554.256, abs=1e-3) for m in meshes)
    sides = {h.side for h in hands}
    assert sides == {0, 1}
    assert all(np.asarray(h.keypoints_3d).reshape(21, 3)[:, 2].min() > 0 for h in hands)
    tf_stamps = {bag_io.stamp_ns(t.header.stamp) for message in topics['/tf'] for t in message.transforms}
    assert tf_stamps <= set(stamps) and len(topics['/tf']) == sum(bool(m.hands) for m in meshes)
    assert len(topics['/hands/markers']) >= len([m for m in meshes if m.hands])
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['overlays'] == 30 and summary['mode'] == 'landmarks_only'
    assert sorted(p.name for p in (out / 'overlays').iterdir())[:2] == ['000.jpg', '001.jpg']


@pytest.mark.slow
def test_demo_with_a_model_publishes_meshes(tmp_path):
    out = tmp_path / 'demo'
    result = subprocess.run(['python', str(ROOT / 'scripts' / 'demo_sequence.py'), '--out', str(out), '--frames', '12',
                             '--small-random'], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    meshes = _bag(out)['/hands/mano']
    assert len(meshes) == 12
    hands = [h for m in meshes for h in m.hands]
    assert hands and all(h.source == 0 and len(h.vertices) == 778 * 3 and len(h.faces) == 1552 * 3 for h in hands)
    markers = [marker for message in _bag(out)['/hands/markers'] for marker in message.markers]
    assert any(marker.ns == 'hand_mesh' and len(marker.points) == 1552 * 3 for marker in markers)
