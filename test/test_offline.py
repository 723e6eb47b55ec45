"""Offline readers and writers: every input frame comes out (also unreadable ones, with the reason), records
rebuild the frame exactly, batching across frames gives the hands of one-at-a-time."""
import cv2
import numpy as np
import pytest

from hamer_ros.io import offline
from hamer_ros.pipeline import faces_by_side

from offline_helpers import (damaged_copy, decoded_frames, input_frame, model_frame, png_of_zeros, small_model,
                             synthetic_image, write_camera_bag, write_numbered_video)


@pytest.fixture(scope='module')
def model():
    return small_model()


def test_folder_source_reads_every_file_and_reports_unreadable_ones(tmp_path):
    for name, seed in (('b.png', 1), ('a.png', 0), ('a.jpg', 2)):
        cv2.imwrite(str(tmp_path / name), synthetic_image(seed=seed))
    (tmp_path / 'c.png').write_bytes(b'\x89PNG broken')
    (tmp_path / 'notes.txt').write_text('not an image')
    with offline.open_source(tmp_path) as source:
        assert (source.kind, source.total, source.is_sequence) == ('folder', 4, False)
        frames = list(source)
    assert [f.key for f in frames] == ['a.jpg', 'a.png', 'b.png', 'c.png']
    assert [f.stem for f in frames] == ['a_jpg', 'a_png', 'b', 'c']      # a.* would collide
    assert [f.stamp_ns for f in frames] == [0, 0, 0, 0]
    assert frames[3].image is None and 'cannot read' in frames[3].error and 'c.png' in frames[3].error
    np.testing.assert_array_equal(frames[2].image, cv2.imread(str(tmp_path / 'b.png')))
    with offline.open_source(tmp_path, sequence=True, fps=10) as source:
        assert source.is_sequence and [f.stamp_ns for f in source] == [0, 100_000_000, 200_000_000, 300_000_000]


def test_video_source_stamps_from_its_rate(tmp_path):
    path = tmp_path / 'clip.mp4'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 25.0, (160, 120))
    for i in range(6):
        writer.write(synthetic_image(160, 120, seed=i))
    writer.release()
    with offline.open_source(path) as source:
        assert (source.kind, source.total, source.fps) == ('video', 6, 25.0)
        frames = list(source)
    assert [f.stamp_ns for f in frames] == [i * 40_000_000 for i in range(6)]
    assert [f.stem for f in frames] == [f'{i:06d}' for i in range(6)] and frames[0].image.shape == (120, 160, 3)


def test_video_source_reads_past_corrupt_and_truncated_frames(tmp_path, monkeypatch):
    """Every frame the container announces comes out, decoded or failed with the reason; reading goes on past a
    corrupt middle (seeking), and the frames after it are the right ones."""
    for fourcc, suffix in (('MJPG', '.avi'), ('mp4v', '.mp4')):
        full = write_numbered_video(tmp_path / f'full{suffix}', fourcc)
        reference = decoded_frames(full)
        assert len(reference) == 60
        # (A truncated MP4 written by OpenCV lacks its index, which comes last: it cannot be opened at all.)
        for name, damage in (('truncated', dict(keep=0.5)), ('corrupt_middle', dict(garbage=(0.4, 0.1)))):
            if (name, suffix) == ('truncated', '.mp4'):
                continue
            path = damaged_copy(full, tmp_path / f'{name}{suffix}', **damage)
            with offline.open_source(path) as source:
                assert source.total == 60
                frames = list(source)
            assert [f.index for f in frames] == list(range(60)), f'{name}{suffix}: every announced frame'
            failed = [f for f in frames if f.image is None]
            assert failed and all('cannot be decoded' in f.error for f in failed), f'{name}{suffix}'
            assert source.decoded + source.failed == 60 and source.failed == len(failed)
            if name == 'truncated':
                assert 20 <= source.decoded < 60
                for frame in frames[:source.decoded - 1]:     # the last one may be cut inside its data
                    np.testing.assert_array_equal(frame.image, reference[frame.index])
            elif suffix == '.mp4':
                # After the corrupt part the reader is back on the right frames.
                assert all(f.image is not None for f in frames[-10:])
                for frame in frames[-10:]:
                    np.testing.assert_array_equal(frame.image, reference[frame.index])
    # A long run of failures: the rest of the announced frames is reported without trying each.
    monkeypatch.setattr(offline.VideoSource, 'MAX_CONSECUTIVE_FAILURES', 5)
    with offline.open_source(tmp_path / 'truncated.avi') as source:
        frames = list(source)
    assert len(frames) == 60 and source.decoded + source.failed == 60
    assert 'the file ends early (truncated?) although its container announces 60 frames' in frames[-1].error
    assert sum('cannot be decoded' in (f.error or '') for f in frames) == 5


def test_truncated_mcap_bag_gives_its_readable_frames_and_the_rest_failed(tmp_path):
    images = [synthetic_image(seed=i) for i in range(8)]
    bag = write_camera_bag(tmp_path / 'bag', images)
    mcap = next(bag.glob('*.mcap'))
    damaged_copy(mcap, mcap, keep=0.8)       # killed recorder: no summary, no footer
    with offline.open_source(bag) as source:
        assert source.total == 8 and 'is truncated at byte' in source.description
        frames = list(source)
    assert [f.index for f in frames] == list(range(8))
    readable = [f for f in frames if f.image is not None]
    assert 5 <= len(readable) < 8 and frames[:len(readable)] == readable
    for frame in readable:
        np.testing.assert_array_equal(frame.image, images[frame.index])
        assert frame.intrinsics.fx == 500.0 and frame.stamp_ns == 1_700_000_000_000_000_000 + frame.index * 33_333_333
    assert all('not readable' in f.error and 'truncated' in f.error for f in frames[len(readable):])
    # Without metadata.yaml (a lone .mcap file) the readable frames still come out.
    lone = tmp_path / 'lone.mcap'
    lone.write_bytes(mcap.read_bytes())
    with offline.open_source(lone) as source:
        lone_frames = list(source)
    assert len(lone_frames) == len(readable)
    np.testing.assert_array_equal(lone_frames[-1].image, readable[-1].image)
    # An MCAP file cut inside its header is still refused with a clear message.
    (tmp_path / 'tiny.mcap').write_bytes(mcap.read_bytes()[:5])
    with pytest.raises(ValueError, match='cannot open .* as a rosbag2 bag'):
        offline.open_source(tmp_path / 'tiny.mcap')


def test_camera_info_lookup_by_stamp_order(tmp_path):
    """The latest CameraInfo recorded at or before each image (else the first), found by binary search."""
    images = [synthetic_image(64, 48, seed=i) for i in range(3)]
    with offline.open_source(write_camera_bag(tmp_path / 'bag', images)) as source:
        times, infos = source._camera_info_times, source._camera_infos
        assert times == sorted(times) and len(infos) == 3
        assert source._camera_info_at(times[0] - 1) is infos[0]
        assert source._camera_info_at(times[1]) is infos[1] and source._camera_info_at(times[1] + 5) is infos[1]
        assert source._camera_info_at(times[2] + 10**12) is infos[2]


def test_image_size_limit_is_read_from_the_header(tmp_path):
    from hamer_ros.io.image_header import declared_image_size

    big = png_of_zeros(tmp_path / 'big.png', 4000, 3000)        # 12 Mpx > the node's 8.3 Mpx; ~40 kB
    assert big.stat().st_size < 100_000 and declared_image_size(big.read_bytes()) == (4000, 3000)
    assert cv2.imread(str(big)).shape == (3000, 4000, 3), 'a real image that OpenCV would decode'
    cv2.imwrite(str(tmp_path / 'small.png'), synthetic_image())
    cv2.imwrite(str(tmp_path / 'small.tiff'), synthetic_image())    # no header parser: checked once decoded
    with offline.open_source(tmp_path) as source:
        frames = {f.key: f for f in source}
    assert frames['big.png'].image is None
    assert '4000x3000 = 12.0 Mpx, more than the limit of 8.3 Mpx' in frames['big.png'].error
    assert '--max-image-pixels' in frames['big.png'].error
    assert frames['small.png'].image.shape == (240, 320, 3) and frames['small.tiff'].image is not None
    with offline.open_source(tmp_path, max_pixels=12_000_000) as source:
        assert all(f.image is not None for f in source)
    with offline.open_source(tmp_path, max_pixels=50_000) as source:
        errors = {f.key: f.error for f in source}
    assert all('Mpx, more than the limit of 0.1 Mpx' in e for e in errors.values()), errors
    # Videos: the frame size is known when the file is opened; bags: each message (raw Image: its header).
    video = write_numbered_video(tmp_path / 'clip.avi', frames=3)
    with pytest.raises(ValueError, match='its frame is 160x120 = 0.0 Mpx, more than the limit'):
        offline.open_source(video, max_pixels=1000)
    bag = write_camera_bag(tmp_path / 'bag', [synthetic_image(seed=i) for i in range(2)])
    with offline.open_source(bag, max_pixels=1000) as source:
        assert all('more than the limit' in f.error for f in source)


def test_bag_source_images_compressed_camera_info_and_corrupt_messages(tmp_path):
    images = [synthetic_image(96, 64, seed=i) for i in range(4)]
    raw = write_camera_bag(tmp_path / 'raw', images, extra_raw={1: b'\x00\x01\x00\x00junk'})
    with offline.open_source(raw) as source:
        assert (source.kind, source.topic, source.camera_info_topic, source.total) == (
            'bag', '/camera/image_raw', '/camera/camera_info', 4)
        assert source.fps == pytest.approx(30.0, rel=1e-3)
        frames = list(source)
    assert [f.image is None for f in frames] == [False, True, False, False]
    assert 'cannot decode the sensor_msgs/msg/Image message' in frames[1].error
    assert frames[0].stamp_ns == 1_700_000_000_000_000_000 and frames[0].log_time_ns == frames[0].stamp_ns + 1000
    assert frames[2].frame_id == 'camera_optical'
    np.testing.assert_array_equal(frames[3].image, images[3])
    intrinsics = frames[0].intrinsics
    assert (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy, intrinsics.from_camera_info) == (
        500.0, 510.0, 48.0, 32.0, True)

    compressed = write_camera_bag(tmp_path / 'jpeg', images[:2], storage='sqlite3', compressed=True,
                                  camera_info=False)
    with offline.open_source(compressed) as source:
        assert source.topic == '/camera/image_raw/compressed' and source.camera_info_topic is None
        frames = list(source)
    assert frames[0].intrinsics is None
    jpeg_round_trip = cv2.imdecode(cv2.imencode('.jpg', images[1])[1], cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(frames[1].image, jpeg_round_trip)
    with pytest.raises(ValueError, match='--topic is for bag input'):
        offline.open_source(tmp_path, topic='/x')


def test_camera_info_topic_and_unusable_intrinsics():
    assert offline.default_camera_info_topic('/cam/color/image_raw') == '/cam/color/camera_info'
    assert offline.default_camera_info_topic('/cam/image_raw/compressed') == '/cam/camera_info'

    class Info:
        def __init__(self, k, width=640, height=480):
            self.k, self.width, self.height = k, width, height
    good = [600.0, 0, 320, 0, 610.0, 240, 0, 0, 1]
    assert offline.intrinsics_from_camera_info(Info(good), 640, 480).fy == 610.0
    assert offline.intrinsics_from_camera_info(Info(good, 0, 0), 1280, 720) is not None    # size not given
    assert offline.intrinsics_from_camera_info(Info(good), 1280, 720) is None               # another size
    assert offline.intrinsics_from_camera_info(Info([0.0] * 9), 640, 480) is None
    assert offline.intrinsics_from_camera_info(Info([np.nan] + good[1:]), 640, 480) is None


@pytest.mark.parametrize('fmt', ['json', 'npz'])
def test_records_rebuild_the_frame_exactly(tmp_path, model, fmt):
    from hamer_ros.ros.ros_messages import hand_mesh_array
    from hamer_ros.ros.tf_frames import hand_transforms
    from hamer_ros.io import bag_io

    frame = model_frame(model)
    frame.dropped.append('left hand track 9: HaMeR output has NaN/inf in betas')
    faces = faces_by_side(model.faces)
    store = offline.RecordStore(tmp_path, fmt)
    path = store.write('000000', offline.frame_to_record(frame, input_frame(0), faces, timings_ms={'model_ms': 3.0}))
    assert path.name == f'000000.{fmt}' and store.exists('000000') and not list(tmp_path.glob('.*'))
    record = store.read('000000')
    assert (record['status'], record['mode'], record['dropped']) == ('ok', 'hamer', frame.dropped)
    assert [h['source'] for h in record['hands']] == ['hamer', 'hamer', 'mediapipe']
    left = record['hands'][0]
    assert np.asarray(left['faces']).shape == (1552, 3) and np.asarray(left['vertices']).shape == (778, 3)
    np.testing.assert_array_equal(np.asarray(left['faces']), faces['left'])
    back = offline.record_to_frame(record)
    assert (back.width, back.height, back.stamp_ns, back.intrinsics) == (
        frame.width, frame.height, frame.stamp_ns, frame.intrinsics)
    for original, rebuilt in zip(frame.hands, back.hands):
        assert (rebuilt.detection.side, rebuilt.detection.track_id) == (original.detection.side,
                                                                        original.detection.track_id)
        np.testing.assert_array_equal(rebuilt.detection.box_xyxy, original.detection.box_xyxy)
    # The HandMesh fields come back bit-exact; TF positions to float64 rounding.
    header = bag_io.header(frame.stamp_ns, 'camera_optical')
    for ours, theirs in zip(hand_mesh_array(back, header, faces).hands, hand_mesh_array(frame, header, faces).hands):
        for name in ('global_orient', 'hand_pose', 'betas', 'keypoints_3d', 'keypoints_2d', 'vertices', 'faces'):
            np.testing.assert_array_equal(np.asarray(getattr(ours, name)), np.asarray(getattr(theirs, name)), name)
        assert (ours.translation.x, ours.translation.z, ours.side, ours.source) == (
            theirs.translation.x, theirs.translation.z, theirs.side, theirs.source)
    for ours, theirs in zip(hand_transforms(back, header), hand_transforms(frame, header)):
        assert ours.child_frame_id == theirs.child_frame_id
        np.testing.assert_allclose([ours.transform.translation.x, ours.transform.rotation.w],
                                   [theirs.transform.translation.x, theirs.transform.rotation.w], rtol=1e-12)


def test_failed_and_empty_frames_have_records(tmp_path):
    store = offline.RecordStore(tmp_path, 'json')
    failed = offline.failed_record(input_frame(3), 'cannot decode the image')
    store.write('000003', failed)
    record = store.read('000003')
    assert (record['status'], record['error'], record['hands'], record['index']) == (
        'failed', 'cannot decode the image', [], 3)
    (tmp_path / 'broken.json').write_text('{"format": ')
    with pytest.raises(ValueError, match='broken.json is unreadable .*delete it to recompute'):
        store.read('broken')
    with pytest.raises(ValueError, match="--format must be 'json' or 'npz'"):
        offline.RecordStore(tmp_path, 'csv')


def test_batching_across_frames_gives_the_hands_of_single_frames(model):
    from offline_helpers import two_hand_detections

    images = [synthetic_image(seed=i) for i in range(3)]
    detections = [two_hand_detections(), [], two_hand_detections()[1:]]
    batched = model.predict_frames([(image, dets, None) for image, dets in zip(images, detections)])
    assert [len(hands) for hands in batched] == [2, 0, 1]
    for image, dets, hands in zip(images, detections, batched):
        for single, together in zip(model.predict(image, dets), hands):
            assert single.is_right == together.is_right
            for name in ('vertices', 'cam_t', 'keypoints_2d', 'global_orient', 'betas'):
                np.testing.assert_allclose(getattr(together, name), getattr(single, name), atol=2e-5, rtol=1e-4,
                                           err_msg=name)


def test_meshes_are_closed_and_wound_for_their_side(tmp_path, model):
    from hamer_ros.io.mesh_io import read_obj

    frame = model_frame(model)
    faces = faces_by_side(model.faces)
    written = offline.write_meshes(tmp_path, 'f', frame, faces)
    assert [p.name for p in written] == ['f_hand0_left.obj', 'f_hand1_right.obj']   # landmarks hand: no mesh
    for path, hand in zip(written, frame.hands):
        mesh = read_obj(path)
        np.testing.assert_allclose(mesh.vertices, hand.reconstruction.vertices_camera, rtol=1e-7, atol=1e-9)
        np.testing.assert_array_equal(mesh.faces, faces[hand.detection.side])
    left, right = (read_obj(p).faces for p in written)
    assert len(left) == 1552 and np.array_equal(left, right[:, [0, 2, 1]])
