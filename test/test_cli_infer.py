"""`python -m hamer_ros infer` end to end on small inputs with a small-config HaMeR checkpoint: every frame gets a
record, outputs match the model, bags carry the input stamps, interrupted and killed runs resume to the same
result."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hamer_ros.io import bag_io
from hamer_ros.cli import main
from hamer_ros.cli.infer import InferRun
from hamer_ros.hamer.model import HamerModel
from hamer_ros.types import HandDetection

from hamer_test_files import write_small_data_dir
from offline_helpers import assert_same_message, synthetic_image, write_camera_bag

LEFT_BOX, RIGHT_BOX = [40.0, 60.0, 130.0, 170.0], [180.0, 50.0, 290.0, 180.0]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return write_small_data_dir(tmp_path_factory.mktemp('small') / '_DATA')


@pytest.fixture(scope='module')
def boxes_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('boxes') / 'boxes.json'
    path.write_text(json.dumps({'*': [{'box_xyxy': LEFT_BOX, 'side': 'left', 'score': 0.8},
                                      {'box_xyxy': RIGHT_BOX, 'side': 'right'}],
                                'b.png': [], '2': [{'box_xyxy': RIGHT_BOX, 'side': 'right'}]}))
    return path


@pytest.fixture(scope='module')
def camera_bag(tmp_path_factory):
    """6 frames, the fourth one corrupt."""
    images = [synthetic_image(seed=i) for i in range(6)]
    return write_camera_bag(tmp_path_factory.mktemp('bag') / 'camera', images, extra_raw={3: b'\x00\x01junk'})


def _records(folder):
    return {p.stem: json.loads(p.read_text()) for p in sorted((folder / 'results').glob('*.json'))}


def _infer(*args):
    return main(['infer', *[str(a) for a in args], '--quiet'])


def test_folder_with_boxes(tmp_path, data_dir, boxes_file, capsys):
    frames = tmp_path / 'frames'
    frames.mkdir()
    images = {name: synthetic_image(seed=i) for i, name in enumerate(('a.png', 'b.png', 'c.png'))}
    for name, image in images.items():
        cv2.imwrite(str(frames / name), image)
    (frames / 'd.png').write_bytes(b'\x89PNG truncated')
    out = tmp_path / 'out'
    assert _infer(frames, '--out', out, '--data-dir', data_dir, '--boxes', boxes_file, '--save-mesh',
                  '--side-view') == 0
    assert '4 frames: 2 with hands, 1 without, 1 failed' in capsys.readouterr().out

    records = _records(out)
    assert {k: r['status'] for k, r in records.items()} == {'a': 'ok', 'b': 'no_hands', 'c': 'ok', 'd': 'failed'}
    assert 'cannot read' in records['d']['error'] and records['b']['error'] is None
    # The record holds what the model gives for that image and those boxes.
    model = HamerModel.load(data_dir)
    expected = model.predict(images['c.png'], [HandDetection(np.array(LEFT_BOX), 'left', score=0.8),
                                               HandDetection(np.array(RIGHT_BOX), 'right')])
    for hand, recon in zip(records['c']['hands'], expected):
        np.testing.assert_allclose(hand['vertices'], recon.vertices_camera, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(hand['keypoints_2d'], recon.keypoints_2d, rtol=1e-5, atol=1e-3)
        assert hand['source'] == 'hamer' and len(hand['faces']) == 1552
    assert records['c']['hands'][0]['score'] == 0.8 and records['c']['hands'][0]['side'] == 'left'
    # Overlays with the side view beside them; no overlay for the unreadable file; one OBJ per hand.
    overlays = sorted(p.name for p in (out / 'overlays').iterdir())
    assert overlays == ['a.jpg', 'b.jpg', 'c.jpg']
    assert cv2.imread(str(out / 'overlays' / 'a.jpg')).shape == (240, 640, 3)
    assert sorted(p.name for p in (out / 'meshes').iterdir()) == [
        'a_hand0_left.obj', 'a_hand1_right.obj', 'c_hand0_left.obj', 'c_hand1_right.obj']
    summary = json.loads((out / 'summary.json').read_text())
    assert (summary['frames'], summary['hands'], summary['mode']) == (4, 4, 'hamer')
    # The overlay differs from the input where the right hand's mesh is drawn.
    overlay = cv2.imread(str(out / 'overlays' / 'c.jpg'))[:, :320]
    u, v = np.round(np.mean(expected[1].keypoints_2d, axis=0)).astype(int)
    assert np.abs(overlay[v - 3:v + 4, u - 3:u + 4].astype(int) - images['c.png'][v - 3:v + 4, u - 3:u + 4]).mean() > 20


def test_existing_output_needs_resume_or_overwrite(tmp_path, data_dir, boxes_file, capsys):
    image = tmp_path / 'one.png'
    cv2.imwrite(str(image), synthetic_image())
    out = tmp_path / 'out'
    assert _infer(image, '--out', out, '--data-dir', data_dir, '--boxes', boxes_file) == 0
    assert _infer(image, '--out', out, '--data-dir', data_dir, '--boxes', boxes_file) == 2
    assert 'pass --resume to continue it or --overwrite to replace it' in capsys.readouterr().err
    other = tmp_path / 'other.png'
    cv2.imwrite(str(other), synthetic_image(seed=5))
    assert _infer(other, '--out', out, '--data-dir', data_dir, '--boxes', boxes_file, '--resume') == 2
    assert '--resume: ' in capsys.readouterr().err
    assert _infer(other, '--out', out, '--data-dir', data_dir, '--boxes', boxes_file, '--overwrite') == 0
    assert sorted(_records(out)) == ['other']
    assert _infer(tmp_path / 'missing.png', '--out', tmp_path / 'x') == 2
    assert 'missing.png does not exist' in capsys.readouterr().err


def _bag_topics(path):
    messages = bag_io.read_bag(path)
    return {topic: [m for m in messages if m.topic == topic] for topic in ('/hands/mano', '/tf', '/hands/markers')}


def _assert_same_bags(ours, reference):
    for topic, messages in reference.items():
        assert [m.log_time_ns for m in ours[topic]] == [m.log_time_ns for m in messages], topic
        for a, b in zip(ours[topic], messages):
            # Frames rebuilt from records: HandMesh fields bit-exact, float64 TF/marker values to rounding.
            assert_same_message(a.message, b.message, topic, rtol=0 if topic == '/hands/mano' else 1e-12)


@pytest.fixture(scope='module')
def reference_run(tmp_path_factory, camera_bag, data_dir, boxes_file):
    out = tmp_path_factory.mktemp('reference') / 'out'
    # Batch size 1 everywhere it is compared: forwards of other sizes may differ in the last float bit.
    assert _infer(camera_bag, '--out', out, '--data-dir', data_dir, '--boxes', boxes_file, '--batch-size', 1) == 0
    return out


def test_bag_in_bag_out(reference_run, camera_bag):
    records = _records(reference_run)
    assert [r['status'] for r in records.values()] == ['ok', 'ok', 'ok', 'failed', 'ok', 'ok']
    assert 'cannot decode' in records['000003']['error']
    assert [len(r['hands']) for r in records.values()] == [2, 2, 1, 0, 2, 2]       # boxes: frame "2" has one
    inputs = [m for m in bag_io.read_bag(camera_bag, ['/camera/image_raw']) if m.message is not None]
    topics = _bag_topics(reference_run / 'hands')
    meshes = topics['/hands/mano']
    assert len(meshes) == 5, 'one HandMeshArray per decodable frame'
    for mesh, image in zip(meshes, inputs):
        assert mesh.message.header.stamp == image.message.header.stamp
        assert mesh.message.header.frame_id == 'camera_optical' and mesh.log_time_ns == image.log_time_ns
        assert mesh.message.intrinsics_from_camera_info and mesh.message.fx == 500.0
    assert [len(m.message.hands) for m in meshes] == [2, 2, 1, 2, 2]
    hand = meshes[0].message.hands[1]
    record_hand = records['000000']['hands'][1]
    np.testing.assert_array_equal(hand.vertices, np.float32(record_hand['vertices']).reshape(-1))
    assert [len(m.message.transforms) for m in topics['/tf']] == [42, 42, 21, 42, 42]
    assert all(t.header.stamp == meshes[0].message.header.stamp for t in topics['/tf'][0].message.transforms)
    markers = topics['/hands/markers'][2].message.markers
    assert [(m.ns, m.action) for m in markers].count(('hand_mesh', 2)) == 1, 'the vanished left hand is deleted'
    video = cv2.VideoCapture(str(reference_run / 'overlay.mp4'))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 6, 'one video frame per input frame'


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch, reference_run, camera_bag, data_dir,
                                                    boxes_file):
    out = tmp_path / 'out'
    emitted, original = [], InferRun._emit

    def interrupt_at_third(self, *args):
        if len(emitted) == 2:
            raise KeyboardInterrupt
        emitted.append(args[0].stem)
        original(self, *args)
    monkeypatch.setattr(InferRun, '_emit', interrupt_at_third)
    assert _infer(camera_bag, '--out', out, '--data-dir', data_dir, '--boxes', boxes_file, '--batch-size', 1) == 130
    assert sorted(_records(out)) == ['000000', '000001']
    assert len(_bag_topics(out / 'hands')['/hands/mano']) == 2, 'the bag was finalised and is readable'
    monkeypatch.setattr(InferRun, '_emit', original)
    assert _infer(camera_bag, '--out', out, '--data-dir', data_dir, '--boxes', boxes_file, '--batch-size', 1,
                  '--resume') == 0
    _assert_same_bags(_bag_topics(out / 'hands'), _bag_topics(reference_run / 'hands'))
    ours, reference = _records(out), _records(reference_run)
    assert sorted(ours) == sorted(reference)
    for stem in reference:
        ours[stem].pop('timings_ms'), reference[stem].pop('timings_ms')
        assert ours[stem] == reference[stem], stem
    assert json.loads((out / 'summary.json').read_text())['resumed'] == 2


def test_killed_run_leaves_no_broken_output_and_resumes(tmp_path, reference_run, camera_bag, data_dir, boxes_file):
    out = tmp_path / 'out'
    code = ('import os, sys\nfrom hamer_ros.cli import main\nfrom hamer_ros.cli.infer import InferRun\n'
            'emit, done = InferRun._emit, []\n'
            'def dying(self, *args):\n    emit(self, *args)\n    done.append(1)\n'
            '    if len(done) == 3:\n        os._exit(9)\n'
            'InferRun._emit = dying\nmain(sys.argv[1:])\n')
    args = ['infer', str(camera_bag), '--out', str(out), '--data-dir', str(data_dir), '--boxes', str(boxes_file),
            '--quiet', '--batch-size', '1']
    result = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 9, result.stderr
    assert sorted(_records(out)) == ['000000', '000001', '000002']
    assert not (out / 'hands').exists() and not (out / 'overlay.mp4').exists(), 'nothing half-written'
    assert main(args[:1] + args[1:] + ['--resume']) == 0
    _assert_same_bags(_bag_topics(out / 'hands'), _bag_topics(reference_run / 'hands'))
    assert not [p.name for p in out.iterdir() if p.name.startswith('.')]
    assert int(cv2.VideoCapture(str(out / 'overlay.mp4')).get(cv2.CAP_PROP_FRAME_COUNT)) == 6


def test_batch_size_and_npz_format_do_not_change_results(tmp_path, camera_bag, data_dir, boxes_file, reference_run):
    out = tmp_path / 'out'
    assert _infer(camera_bag, '--out', out, '--data-dir', data_dir, '--boxes', boxes_file, '--batch-size', 8,
                  '--format', 'npz', '--overlay', 'none', '--no-bag') == 0
    assert not (out / 'hands').exists() and not (out / 'overlay.mp4').exists()
    from hamer_ros.io.offline import RecordStore
    store = RecordStore(out / 'results', 'npz')
    for stem, reference in _records(reference_run).items():
        record = store.read(stem)
        assert record['status'] == reference['status']
        for ours, theirs in zip(record['hands'], reference['hands']):
            np.testing.assert_allclose(ours['vertices'], theirs['vertices'], rtol=1e-4, atol=1e-6)
            np.testing.assert_array_equal(ours['faces'], theirs['faces'])


def test_video_input(tmp_path, data_dir, boxes_file):
    video = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 15.0, (320, 240))
    for i in range(5):
        writer.write(synthetic_image(seed=i))
    writer.release()
    out = tmp_path / 'out'
    assert _infer(video, '--out', out, '--data-dir', data_dir, '--boxes', boxes_file, '--save-mesh') == 0
    records = _records(out)
    assert len(records) == 5 and [r['stamp_ns'] for r in records.values()] == [round(i * 1e9 / 15) for i in range(5)]
    assert len(list((out / 'meshes').glob('*.obj'))) == 2 + 2 + 1 + 2 + 2
    assert int(cv2.VideoCapture(str(out / 'overlay.mp4')).get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    track_ids = [[h.get('track_id') for h in r['hands']] for r in records.values()]
    assert track_ids[0] == track_ids[1] == [0, 1], 'video frames are tracked'


@pytest.mark.mediapipe
def test_landmarks_only_without_weights(tmp_path, sample_photo, capsys):
    out = tmp_path / 'out'
    photo = sample_photo('bus_man_both')
    assert _infer(photo, '--out', out, '--data-dir', tmp_path / 'no_weights', '--save-mesh') == 0
    printed = capsys.readouterr().out
    assert 'running landmarks-only' in printed and 'setup-weights' in printed
    record = next(iter(_records(out).values()))
    assert record['mode'] == 'landmarks_only' and record['status'] == 'ok'
    assert sorted(h['side'] for h in record['hands']) == ['left', 'right']
    assert all(h['source'] == 'mediapipe' and len(h['keypoints_3d']) == 21 for h in record['hands'])
    assert all(np.asarray(h['keypoints_3d'])[:, 2].min() > 0 for h in record['hands']), 'in front of the camera'
    assert not (out / 'meshes').exists(), 'no meshes without weights'
    overlay = cv2.imread(str(out / 'overlays' / f'{photo.stem}.jpg'))
    assert overlay.shape == cv2.imread(str(photo)).shape


# ------------------------------------------------------------------------ damaged inputs, resuming exactly

def test_damaged_video_loses_no_frame(tmp_path, data_dir, boxes_file, capsys):
    from offline_helpers import damaged_copy, write_numbered_video

    video = damaged_copy(write_numbered_video(tmp_path / 'full.avi'), tmp_path / 'truncated.avi', keep=0.5)
    out = tmp_path / 'out'
    assert _infer(video, '--out', out, '--data-dir', data_dir, '--boxes', boxes_file, '--overlay', 'none') == 0
    records = _records(out)
    assert sorted(records) == [f'{i:06d}' for i in range(60)], 'one record per frame the container announces'
    failed = [r for r in records.values() if r['status'] == 'failed']
    assert 10 <= len(failed) < 60 and all('cannot be decoded' in r['error'] for r in failed)
    summary = json.loads((out / 'summary.json').read_text())
    assert (summary['frames'], summary['announced_frames'], summary['failed']) == (60, 60, len(failed))
    assert f'60 frames: {60 - len(failed) - summary["no_hands"]} with hands' in capsys.readouterr().out


def _comparable(folder):
    """Everything a run leaves that must not depend on interruptions: records (without timings), OBJ files."""
    records = _records(folder)
    for record in records.values():
        record.pop('timings_ms')
    meshes = {p.name: p.read_bytes() for p in sorted((folder / 'meshes').glob('*.obj'))}
    return records, meshes


def _kill_at(emitted: int, args):
    """Run `infer args` in a child process killed with SIGKILL right after its `emitted`-th record."""
    code = ('import os, signal, sys\nfrom hamer_ros.cli import main\nfrom hamer_ros.cli.infer import InferRun\n'
            'emit, done = InferRun._emit, []\n'
            'def dying(self, *args):\n    emit(self, *args)\n    done.append(1)\n'
            f'    if len(done) == {emitted}:\n        os.kill(os.getpid(), signal.SIGKILL)\n'
            'InferRun._emit = dying\nmain(sys.argv[1:])\n')
    return subprocess.run([sys.executable, '-c', code, 'infer', *[str(a) for a in args], '--quiet'],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.mediapipe
def test_resume_after_kill_equals_an_uninterrupted_run_with_mediapipe(tmp_path, sample_photo, data_dir):
    """MediaPipe in video mode tracks hands from frame to frame: a resumed run rebuilds that state (detection
    runs again over the frames before the resume point) and gives exactly the uninterrupted run's results."""
    from offline_helpers import demo_module

    photo = cv2.imread(str(sample_photo('bus_man_both')))
    video = tmp_path / 'hands.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 15.0, (640, 480))
    # 30 frames of slow panning: MediaPipe's tracking carries over (started fresh mid-way, boxes move by pixels).
    for frame in demo_module().make_sequence(photo, count=30):
        writer.write(frame)
    writer.release()
    common = [video, '--data-dir', data_dir, '--save-mesh', '--batch-size', 1, '--overlay', 'none']
    reference = tmp_path / 'reference'
    assert _infer(*common, '--out', reference) == 0
    records, meshes = _comparable(reference)
    assert len(records) == 30 and sum(len(r['hands']) for r in records.values()) >= 30
    for emitted in (3, 15, 24):
        out = tmp_path / f'killed_{emitted}'
        result = _kill_at(emitted, [*common, '--out', out])
        assert result.returncode == -9, result.stderr
        assert len(_records(out)) == emitted
        assert _infer(*common, '--out', out, '--resume') == 0
        ours, our_meshes = _comparable(out)
        assert ours == records, f'killed after {emitted} frames'
        assert our_meshes == meshes, f'killed after {emitted} frames'
        assert json.loads((out / 'summary.json').read_text())['resumed'] == emitted


def test_resume_refuses_other_settings_and_recomputes_damaged_records(tmp_path, reference_run, camera_bag, data_dir,
                                                                      boxes_file, capsys):
    out = tmp_path / 'out'
    common = [camera_bag, '--out', out, '--data-dir', data_dir, '--boxes', boxes_file, '--batch-size', 1]
    assert _infer(*common) == 0
    capsys.readouterr()
    for other, name in ((['--mirrored'], 'mirrored'), (['--intrinsics', 500, 500, 160, 120], 'intrinsics'),
                        (['--landmarks-only'], 'mode'), (['--num-hands', 1], 'num_hands')):
        assert _infer(*common, *other, '--resume') == 2
        err = capsys.readouterr().err
        assert err.startswith(f'hamer_ros infer: error: --resume: {out} holds a run with other {name}'), err
    other_boxes = tmp_path / 'boxes.json'
    other_boxes.write_text(boxes_file.read_text().replace('0.8', '0.7'))
    assert _infer(*common[:-4], '--boxes', other_boxes, '--batch-size', 1, '--resume') == 2
    assert 'other boxes' in capsys.readouterr().err
    # Damaged records ({} from a crash of another tool, cut JSON, another frame's record) are computed again.
    (out / 'results' / '000001.json').write_text('{}')
    (out / 'results' / '000002.json').write_text('{"format": "hamer_ros.fra')
    (out / 'results' / '000004.json').write_text((out / 'results' / '000005.json').read_text())
    assert _infer(*common, '--resume') == 0
    printed = capsys.readouterr().out
    assert printed.count('recomputing frame') == 3
    ours, reference = _records(out), _records(reference_run)
    for stem in reference:
        ours[stem].pop('timings_ms'), reference[stem].pop('timings_ms')
        assert ours[stem] == reference[stem], stem
    assert json.loads((out / 'summary.json').read_text())['resumed'] == 2    # 0 and 5; 3 failed: tried again


def test_hand_free_frames_do_not_pile_up(tmp_path, data_dir, monkeypatch):
    """Frames wait for a HaMeR batch only while earlier frames with hands do: a long hand-free input keeps no
    frames (and their images) in memory. benchmarks/bench_infer_memory.py measures the peak RSS."""
    from offline_helpers import write_numbered_video

    video = write_numbered_video(tmp_path / 'no_hands.avi', frames=200)
    boxes = tmp_path / 'boxes.json'
    boxes.write_text(json.dumps({'*': [], '150': [{'box_xyxy': [10, 10, 60, 70], 'side': 'left'}],
                                 '151': [{'box_xyxy': [10, 10, 60, 70], 'side': 'left'}]}))
    waiting, flush = [], InferRun._flush

    def measured_flush(self):
        waiting.append(len(self._pending))
        flush(self)
    monkeypatch.setattr(InferRun, '_flush', measured_flush)
    out = tmp_path / 'out'
    assert _infer(video, '--out', out, '--data-dir', data_dir, '--boxes', boxes, '--batch-size', 4,
                  '--overlay', 'none') == 0
    assert max(waiting) <= 4, f'at most --batch-size frames wait, not {max(waiting)}'
    records = _records(out)
    assert len(records) == 200 and [len(records[f'{i:06d}']['hands']) for i in (149, 150, 151, 152)] == [0, 1, 1, 0]


def test_oversized_images_are_refused_before_decoding(tmp_path, data_dir, capsys):
    from offline_helpers import png_of_zeros

    folder = tmp_path / 'frames'
    folder.mkdir()
    png_of_zeros(folder / 'big.png', 4000, 3000)
    cv2.imwrite(str(folder / 'small.png'), synthetic_image())
    out = tmp_path / 'out'
    assert _infer(folder, '--out', out, '--landmarks-only', '--boxes', tmp_path / 'none.json') == 2    # no file
    (tmp_path / 'none.json').write_text('{"*": []}')
    assert _infer(folder, '--out', out, '--landmarks-only', '--boxes', tmp_path / 'none.json') == 0
    records = _records(out)
    assert records['big']['status'] == 'failed' and 'more than the limit of 8.3 Mpx' in records['big']['error']
    assert records['small']['status'] == 'no_hands'
    capsys.readouterr()
    assert main(['detect', '--image', str(folder / 'big.png'), '--out', str(tmp_path / 'd.json')]) == 2
    assert 'big.png is 4000x3000 = 12.0 Mpx, more than the limit of 8.3 Mpx' in capsys.readouterr().err
    assert main(['predict', '--image', str(folder / 'big.png'), '--box', '1', '2', '30', '40', '--side', 'left',
                 '--data-dir', str(data_dir), '--out', str(tmp_path / 'p.npz'), '--max-image-pixels',
                 '1000000']) == 2
    assert 'more than the limit of 1.0 Mpx' in capsys.readouterr().err and not (tmp_path / 'p.npz').exists()
