"""bag_io: rosbags stand-in messages equal to ROS's on the wire, with and without ROS installed; crash-safe bag
writing; bag reading and topic choice."""
import os
import subprocess
import sys

import numpy as np
import pytest

from hamer_ros.io import bag_io
from hamer_ros.io.offline import RecordStore, frame_to_record, record_to_frame
from hamer_ros.pipeline import faces_by_side

from offline_helpers import (ROOT, assert_same_message, input_frame, model_frame, run_without_ros,
                             small_model, synthetic_image, write_camera_bag)


def test_message_definitions_are_found_and_registered():
    folder = bag_io.message_definition_dir()
    assert (folder / 'HandMesh.msg').read_text() == (ROOT / 'msg' / 'HandMesh.msg').read_text()
    store = bag_io.typestore()
    names = [name for name, _ in store.fielddefs['hamer_ros/msg/HandMesh'][1]]
    assert names[:3] == ['header', 'track_id', 'side'] and names[-1] == 'faces'


def test_stand_ins_behave_like_ros_classes():
    Marker = bag_io.stand_in('visualization_msgs/msg/Marker')
    marker = Marker(ns='hand_mesh', type=Marker.TRIANGLE_LIST)
    assert (marker.id, marker.header.frame_id, marker.pose.orientation.w, marker.points) == (0, '', 0.0, [])
    marker.pose.orientation.w = 1.0
    assert Marker().pose.orientation.w == 0.0, 'defaults must not be shared between instances'
    HandMesh = bag_io.stand_in('hamer_ros/msg/HandMesh')
    mesh = HandMesh(side=HandMesh.SIDE_RIGHT)
    import array
    mesh.vertices = array.array('f', np.arange(6, dtype=np.float32).tobytes())
    mesh.faces = [1, 2, 3]
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.uint32
    decoded = bag_io.deserialize(bag_io.serialize(mesh), 'hamer_ros/msg/HandMesh')
    np.testing.assert_array_equal(decoded.vertices, np.arange(6))
    assert decoded.side == 1 and list(decoded.faces) == [1, 2, 3]
    with pytest.raises(TypeError, match='no field'):
        HandMesh(vertexes=[])


def _messages(frame, faces, stamp_frame='camera_optical'):
    """What the offline bag holds for one frame: HandMeshArray, TFMessage, MarkerArray."""
    from hamer_ros.ros.markers import MarkerBuilder
    from hamer_ros.ros.ros_messages import hand_mesh_array
    from hamer_ros.ros.tf_frames import hand_transforms

    header = bag_io.header(frame.stamp_ns, stamp_frame)
    mesh = hand_mesh_array(frame, header, faces)
    transforms = hand_transforms(frame, header)
    markers = MarkerBuilder().build(frame, header, faces).filled()
    return mesh, transforms, markers


def test_ros_messages_serialise_as_rclpy_does():
    """With ROS installed the builders make rclpy messages; bag_io's CDR of them decodes to what rclpy's does."""
    serialization = pytest.importorskip('rclpy.serialization')
    from tf2_msgs.msg import TFMessage

    frame = model_frame(small_model())
    mesh, transforms, markers = _messages(frame, faces_by_side(small_model().faces))
    assert type(mesh).__module__.startswith('hamer_ros.msg'), 'ROS is installed: the builders use its classes'
    for message, typename in ((mesh, 'hamer_ros/msg/HandMeshArray'), (TFMessage(transforms=transforms),
                                                                    'tf2_msgs/msg/TFMessage'),
                              (markers, 'visualization_msgs/msg/MarkerArray')):
        ours = bag_io.deserialize(bag_io.serialize(message), typename)
        theirs = bag_io.deserialize(serialization.serialize_message(message), typename)
        assert_same_message(ours, theirs, typename)
    assert len(mesh.hands) == 3 and len(markers.markers) == 2 * 3 + 2    # landmarks-only: no mesh marker


def test_without_ros_the_same_messages_come_out(tmp_path):
    """A pip-only machine (no ROS module importable): stand-in classes, same decoded messages."""
    serialization = pytest.importorskip('rclpy.serialization')
    from tf2_msgs.msg import TFMessage

    model = small_model()
    faces = faces_by_side(model.faces)
    store = RecordStore(tmp_path, 'npz')
    store.write('frame', frame_to_record(model_frame(model), input_frame(0), faces))
    code = '''
import sys
from hamer_ros.io import bag_io, message_classes
assert not message_classes.ROS_CLASSES
from hamer_ros.ros.markers import MarkerBuilder
from hamer_ros.io.offline import RecordStore, record_to_frame
from hamer_ros.ros.ros_messages import hand_mesh_array
from hamer_ros.ros.tf_frames import hand_transforms
import numpy as np
store = RecordStore(sys.argv[1], 'npz')
record = store.read('frame')
frame = record_to_frame(record)
faces = {h['side']: np.asarray(h['faces']) for h in record['hands'] if h['source'] == 'hamer'}
header = bag_io.header(frame.stamp_ns, 'camera_optical')
TFMessage = bag_io.stand_in('tf2_msgs/msg/TFMessage')
for name, message in (('mesh', hand_mesh_array(frame, header, faces)),
                      ('tf', TFMessage(transforms=hand_transforms(frame, header))),
                      ('markers', MarkerBuilder().build(frame, header, faces).filled())):
    open(f'{sys.argv[1]}/{name}.cdr', 'wb').write(bag_io.serialize(message))
print(type(hand_mesh_array(frame, header, faces)).__mro__[1].__name__)
'''
    result = run_without_ros(code, str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert 'hamer_ros__msg__HandMeshArray' in result.stdout
    frame = record_to_frame(store.read('frame'))
    mesh, transforms, markers = _messages(frame, faces)
    for name, message, typename in (('mesh', mesh, 'hamer_ros/msg/HandMeshArray'),
                                    ('tf', TFMessage(transforms=transforms), 'tf2_msgs/msg/TFMessage'),
                                    ('markers', markers, 'visualization_msgs/msg/MarkerArray')):
        without_ros = bag_io.deserialize((tmp_path / f'{name}.cdr').read_bytes(), typename)
        with_ros = bag_io.deserialize(serialization.serialize_message(message), typename)
        assert_same_message(without_ros, with_ros, name)


def _write_some(writer, count):
    Header = bag_io.stand_in('std_msgs/msg/Header')
    for i in range(count):
        writer.write('/hands/mano', bag_io.stand_in('hamer_ros/msg/HandMeshArray')(
            header=Header(frame_id=f'f{i}'), image_width=i), 1000 + i)


def test_bag_writer_finalises_on_error_and_replaces_old_bag(tmp_path):
    path = tmp_path / 'hands'
    topics = {'/hands/mano': 'hamer_ros/msg/HandMeshArray'}
    with bag_io.BagWriter(path, topics) as writer:
        _write_some(writer, 5)
    with pytest.raises(RuntimeError, match='boom'):
        with bag_io.BagWriter(path, topics) as writer:
            _write_some(writer, 3)
            assert len(bag_io.read_bag(path)) == 5, 'the old bag stays in place while the new one is written'
            raise RuntimeError('boom')
    messages = bag_io.read_bag(path)
    assert [m.message.header.frame_id for m in messages] == ['f0', 'f1', 'f2']
    assert [m.log_time_ns for m in messages] == [1000, 1001, 1002]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['hands']
    metadata = (path / 'metadata.yaml').read_text()
    assert 'hands.mcap' in metadata and 'message_count: 3' in metadata


def test_killed_writer_leaves_no_half_bag(tmp_path):
    path = tmp_path / 'hands'
    code = ('import os, sys\nfrom hamer_ros.io import bag_io\nfrom test_offline_bag_io import _write_some\n'
            'w = bag_io.BagWriter(sys.argv[1], {"/hands/mano": "hamer_ros/msg/HandMeshArray"})\n'
            '_write_some(w, 4)\nos._exit(9)\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / 'test'), os.environ.get('PYTHONPATH', '')]))
    result = subprocess.run([sys.executable, '-c', code, str(path)], env=env, capture_output=True, text=True)
    assert result.returncode == 9, result.stderr
    assert not path.exists() and (tmp_path / '.hands.partial').is_dir()
    with bag_io.BagWriter(path, {'/hands/mano': 'hamer_ros/msg/HandMeshArray'}) as writer:
        _write_some(writer, 2)
    assert len(bag_io.read_bag(path)) == 2 and not (tmp_path / '.hands.partial').exists()


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_bag_reader_chooses_the_image_topic(tmp_path, storage):
    images = [synthetic_image(64, 48, seed=i) for i in range(3)]
    path = write_camera_bag(tmp_path / 'two', images, storage=storage)
    reader = bag_io.BagReader(path)
    try:
        assert reader.image_topic(None) == '/camera/image_raw'
        assert reader.count('/camera/image_raw') == 3
        with pytest.raises(ValueError, match='CameraInfo topic; the image topics of .*: /camera/image_raw'):
            reader.image_topic('/camera/camera_info')
        with pytest.raises(ValueError, match='/nope is not in the bag'):
            reader.image_topic('/nope')
        messages = list(reader.messages(['/camera/image_raw']))
        assert [m.message.height for m in messages] == [48] * 3
    finally:
        reader.close()
    # A single storage file works too.
    single = next(path.glob('*.mcap' if storage == 'mcap' else '*.db3'))
    assert len(bag_io.read_bag(single, ['/camera/image_raw'])) == 3


def test_bag_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        bag_io.BagReader(tmp_path / 'missing.mcap')
    (tmp_path / 'junk.mcap').write_bytes(b'not an mcap file at all')
    with pytest.raises(ValueError, match='cannot open .*junk.mcap as a rosbag2 bag'):
        bag_io.BagReader(tmp_path / 'junk.mcap')
    # Two image topics: the user must choose.
    from rosbags.rosbag2 import StoragePlugin, Writer
    with Writer(tmp_path / 'multi', version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for topic in ('/left/image_raw', '/right/image_raw/compressed'):
            kind = 'sensor_msgs/msg/CompressedImage' if topic.endswith('compressed') else 'sensor_msgs/msg/Image'
            writer.add_connection(topic, kind, typestore=bag_io.typestore())
    reader = bag_io.BagReader(tmp_path / 'multi')
    try:
        with pytest.raises(ValueError, match=r'2 image topics \(/left/image_raw \(Image\), '
                                             r'/right/image_raw/compressed \(CompressedImage\)\): choose one'):
            reader.image_topic(None)
    finally:
        reader.close()
