"""FrameResult -> HandMeshArray, fast marker serialization, and the TF frames of the joints."""
import struct

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='needs the colcon-built environment: . scripts/env.sh')

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from hamer_ros.hamer.mano import OPENPOSE_JOINT_NAMES, OPENPOSE_TO_MANO_JOINT  # noqa: E402
from hamer_ros.ros.markers import HandMarkers, MarkerBuilder  # noqa: E402
from hamer_ros.msg import HandMesh, HandMeshArray  # noqa: E402
from hamer_ros.pipeline import faces_by_side  # noqa: E402
from hamer_ros.ros.ros_messages import (box_roi, fast_markers_work, hand_mesh_array,  # noqa: E402
                                    serialize_hand_markers)
from hamer_ros.ros.tf_frames import hand_transforms  # noqa: E402
from hamer_ros.types import CameraIntrinsics, FrameResult, HandResult  # noqa: E402

from node_fakes import fake_detection, fake_reconstruction, random_faces  # noqa: E402


def _header():
    header = Header(frame_id='camera_color_optical_frame')
    header.stamp.sec, header.stamp.nanosec = 1700000001, 999
    return header


def _f32(field):
    return np.frombuffer(field, np.float32)


def _frame(hands, from_camera_info=True):
    intrinsics = CameraIntrinsics(600.0, 601.0, 320.5, 240.5, from_camera_info)
    return FrameResult(width=640, height=480, intrinsics=intrinsics, hands=hands, stamp_ns=1)


def test_hamer_hands_fill_every_field():
    rng = np.random.default_rng(0)
    faces = faces_by_side(random_faces())
    left, right = fake_reconstruction(rng, False), fake_reconstruction(rng, True, cam_t=(-0.1, 0.02, 0.8))
    hands = [HandResult(fake_detection('left', 3, score=0.75), left), HandResult(fake_detection('right', 4), right)]
    header = _header()
    msg = hand_mesh_array(_frame(hands), header, faces)

    assert msg.header == header and (msg.image_width, msg.image_height) == (640, 480)
    assert (msg.fx, msg.fy, msg.cx, msg.cy, msg.intrinsics_from_camera_info) == (600.0, 601.0, 320.5, 240.5, True)
    assert [h.side for h in msg.hands] == [HandMesh.SIDE_LEFT, HandMesh.SIDE_RIGHT]
    for hand_msg, hand in zip(msg.hands, hands):
        recon, side = hand.reconstruction, hand.detection.side
        assert hand_msg.header == header and hand_msg.source == HandMesh.SOURCE_HAMER
        assert hand_msg.track_id == hand.detection.track_id
        assert hand_msg.side_confidence == pytest.approx(0.8) and hand_msg.detection_score == pytest.approx(
            hand.detection.score)
        np.testing.assert_array_equal(_f32(hand_msg.global_orient), recon.global_orient.reshape(-1))
        np.testing.assert_array_equal(_f32(hand_msg.hand_pose), recon.hand_pose.reshape(-1))
        np.testing.assert_array_equal(_f32(hand_msg.betas), recon.betas)
        translation = [hand_msg.translation.x, hand_msg.translation.y, hand_msg.translation.z]
        np.testing.assert_allclose(translation, recon.cam_t)
        np.testing.assert_array_equal(_f32(hand_msg.keypoints_3d), recon.keypoints_camera.reshape(-1))
        np.testing.assert_array_equal(_f32(hand_msg.keypoints_2d), recon.keypoints_2d.reshape(-1))
        np.testing.assert_array_equal(_f32(hand_msg.vertices), recon.vertices_camera.reshape(-1))
        np.testing.assert_array_equal(np.frombuffer(hand_msg.faces, np.uint32), faces[side].reshape(-1))
    # The left hand's triangles are the right hand's, turned around.
    left_faces = np.frombuffer(msg.hands[0].faces, np.uint32).reshape(-1, 3)
    np.testing.assert_array_equal(left_faces, np.frombuffer(msg.hands[1].faces, np.uint32).reshape(-1, 3)[:, [0, 2, 1]])
    # And it all survives serialization.
    decoded = deserialize_message(serialize_message(msg), HandMeshArray)
    assert decoded.header == header and len(decoded.hands) == 2
    for field in ('vertices', 'faces', 'keypoints_3d', 'hand_pose'):
        assert getattr(decoded.hands[1], field) == getattr(msg.hands[1], field)


def test_landmarks_only_hand_and_empty_frame():
    rng = np.random.default_rng(1)
    keypoints = rng.standard_normal((21, 3)) + [0, 0, 3]
    landmarks_2d = rng.uniform(0, 400, (21, 2))
    hand = HandResult(fake_detection('right', 2, landmarks_2d=landmarks_2d), keypoints_camera_mediapipe=keypoints,
                      translation_mediapipe=np.array([0.1, 0.2, 3.0]))
    msg = hand_mesh_array(_frame([hand], from_camera_info=False), _header(), None)
    hand_msg = msg.hands[0]
    assert hand_msg.source == HandMesh.SOURCE_MEDIAPIPE and msg.intrinsics_from_camera_info is False
    np.testing.assert_allclose(_f32(hand_msg.keypoints_3d), keypoints.reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(_f32(hand_msg.keypoints_2d), landmarks_2d.reshape(-1), rtol=1e-6)
    assert (hand_msg.translation.x, hand_msg.translation.y, hand_msg.translation.z) == (0.1, 0.2, 3.0)
    for empty in ('vertices', 'faces', 'global_orient', 'hand_pose', 'betas'):
        assert len(getattr(hand_msg, empty)) == 0
    assert hand_mesh_array(_frame([]), _header()).hands == []


@pytest.mark.parametrize('box,expected', [
    ((100.2, 50.7, 180.0, 160.4), (100, 50, 80, 111)),     # rounded outwards
    ((-20.0, -5.5, 30.1, 40.0), (0, 0, 31, 40)),          # clipped at the top-left corner
    ((600.5, 400.0, 700.0, 520.0), (600, 400, 40, 80)),    # clipped at the bottom-right corner
    ((650.0, 500.0, 700.0, 520.0), (639, 479, 1, 1)),      # wholly outside: an empty-ish ROI on the edge
])
def test_box_roi_rounds_outwards_and_clips(box, expected):
    roi = box_roi(box, 640, 480)
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == expected


def test_fast_marker_serialization_equals_the_full_message():
    assert fast_markers_work()
    rng = np.random.default_rng(2)
    hands = [HandResult(fake_detection('left', 3), fake_reconstruction(rng, False)),
             HandResult(fake_detection('right', 4), fake_reconstruction(rng, True))]
    faces = faces_by_side(random_faces())
    builder = MarkerBuilder()
    markers = builder.build(_frame(hands), _header(), faces)
    fast = serialize_hand_markers(markers)
    assert [len(m.points) for m in markers.message.markers] == [0, 21, 40, 0, 21, 40]   # left untouched
    decoded = deserialize_message(fast, MarkerArray)
    # Compared after the same round trip: float32 fields (colours) are rounded by serialization.
    assert decoded == deserialize_message(serialize_message(markers.filled()), MarkerArray)
    assert len(decoded.markers[0].points) == 1552 * 3


def _random_text(rng, longest: int = 13) -> str:
    alphabet = 'abcXYZ_/09 \u00e9\u4e2d\U0001f590'          # 1- to 4-byte UTF-8 characters shift the layout
    return ''.join(rng.choice(list(alphabet), size=int(rng.integers(0, longest + 1))))


def _random_markers(rng) -> HandMarkers:
    """A MarkerArray with every Marker field random (lengths of strings and sequences too) and random triangle
    corner blocks, some empty: whatever the layout before or after a point block, it must land in place."""
    from builtin_interfaces.msg import Duration
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, UVCoordinate

    out = HandMarkers(MarkerArray())
    for index in range(int(rng.integers(0, 7))):
        header = Header(frame_id=_random_text(rng))
        header.stamp.sec, header.stamp.nanosec = int(rng.integers(-2 ** 31, 2 ** 31)), int(rng.integers(0, 10 ** 9))
        marker = Marker(header=header, ns=_random_text(rng), id=int(rng.integers(-2 ** 31, 2 ** 31)),
                        type=int(rng.integers(0, 12)), action=int(rng.integers(0, 4)),
                        lifetime=Duration(sec=int(rng.integers(0, 100)), nanosec=int(rng.integers(0, 10 ** 9))),
                        frame_locked=bool(rng.integers(0, 2)), texture_resource=_random_text(rng),
                        text=_random_text(rng, 40), mesh_resource=_random_text(rng),
                        mesh_use_embedded_materials=bool(rng.integers(0, 2)))
        marker.pose.position.x, marker.pose.orientation.w = float(rng.standard_normal()), float(rng.random())
        marker.scale.x, marker.color.r = float(rng.random()), float(rng.random())
        marker.colors = [ColorRGBA(r=float(v)) for v in rng.random(int(rng.integers(0, 4)))]
        marker.texture.format = _random_text(rng)
        marker.texture.header.frame_id = _random_text(rng)
        marker.texture.data = rng.integers(0, 256, int(rng.integers(0, 12))).astype(np.uint8).tobytes()
        marker.uv_coordinates = [UVCoordinate(u=float(u), v=0.5) for u in rng.random(int(rng.integers(0, 4)))]
        marker.mesh_file.filename = _random_text(rng)
        marker.mesh_file.data = rng.integers(0, 256, int(rng.integers(0, 12))).astype(np.uint8).tobytes()
        if rng.random() < 0.1:
            # Bytes shaped like a point of a marker (three doubles), e.g. a value a search for a marked point
            # would find twice: the serializer must not look at the data.
            marker.mesh_file.data = struct.pack('<ddd', -7.291435e-301, float(rng.integers(0, 3)), 3.1705e-299)
        if rng.random() < 0.5:
            out.triangle_points[index] = rng.standard_normal((int(rng.choice([0, 1, 3, 6, 7])), 3)) * 10
        else:
            marker.points = [Point(x=float(x), y=float(y), z=float(z))
                             for x, y, z in rng.standard_normal((int(rng.integers(0, 4)), 3))]
        out.message.markers.append(marker)
    return out


def test_fast_marker_serialization_matches_rclpy_on_random_markers():
    """3000 random MarkerArrays: the one-block bytes decode to exactly what rclpy's serializer gives."""
    import copy

    rng = np.random.default_rng(7)
    for case in range(3000):
        markers = _random_markers(rng)
        reference = HandMarkers(copy.deepcopy(markers.message), dict(markers.triangle_points))
        expected = deserialize_message(serialize_message(reference.filled()), MarkerArray)
        fast = serialize_hand_markers(markers)
        assert deserialize_message(fast, MarkerArray) == expected, f'case {case}'
        assert [len(m.points) for m in markers.message.markers] == [
            0 if index in markers.triangle_points else len(m.points) for index, m in enumerate(expected.markers)]


def test_tf_frames_name_place_and_orient_every_joint():
    rng = np.random.default_rng(3)
    left, right = fake_reconstruction(rng, False), fake_reconstruction(rng, True)
    hands = [HandResult(fake_detection('left', 3), left), HandResult(fake_detection('right', 4), right)]
    header = _header()
    transforms = hand_transforms(_frame(hands), header, prefix='hand_')

    assert len(transforms) == 42
    assert transforms[0].child_frame_id == 'hand_left_wrist'
    assert transforms[21 + 8].child_frame_id == 'hand_right_index_tip'
    names = [t.child_frame_id for t in transforms]
    assert names == [f'hand_{side}_{joint}' for side in ('left', 'right') for joint in OPENPOSE_JOINT_NAMES]
    for hand, hand_transforms_ in zip((left, right), (transforms[:21], transforms[21:])):
        positions = [[t.transform.translation.x, t.transform.translation.y, t.transform.translation.z]
                     for t in hand_transforms_]
        np.testing.assert_allclose(positions, hand.keypoints_camera, atol=1e-6)
        quats = [[t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w]
                 for t in hand_transforms_]
        matrices = Rotation.from_quat(quats).as_matrix()
        np.testing.assert_allclose(matrices, hand.joint_rotations[list(OPENPOSE_TO_MANO_JOINT)], atol=1e-6)
        for t in hand_transforms_:
            assert t.header == header
    # A fingertip turns with its last joint: index_tip and index_dip share one orientation.
    tip, dip = OPENPOSE_JOINT_NAMES.index('index_tip'), OPENPOSE_JOINT_NAMES.index('index_dip')
    assert transforms[tip].transform.rotation == transforms[dip].transform.rotation


def test_tf_frames_with_two_hands_of_one_side_and_landmarks_only():
    rng = np.random.default_rng(4)
    first = HandResult(fake_detection('right', 3), fake_reconstruction(rng, True))
    second = HandResult(fake_detection('right', 8), keypoints_camera_mediapipe=rng.standard_normal((21, 3)))
    transforms = hand_transforms(_frame([first, second]), _header(), prefix='p/')
    # The first hand of a side takes the plain name, a second one of that side its track id.
    assert transforms[0].child_frame_id == 'p/right_wrist'
    # Landmarks only: no rotation known; the frames say so in their names and carry the camera's axes.
    assert transforms[21 + 20].child_frame_id == 'p/right_8_pinky_tip_position'
    for t in transforms[21:]:
        r = t.transform.rotation
        assert (r.x, r.y, r.z, r.w) == (0.0, 0.0, 0.0, 1.0) and t.child_frame_id.endswith('_position')
    np.testing.assert_allclose([[t.transform.translation.x, t.transform.translation.y, t.transform.translation.z]
                                for t in transforms[21:]], second.keypoints_camera_mediapipe)


@pytest.mark.parametrize('frame_id,name,problem', [
    ('camera_optical', 'camera_optical', None),
    ('/camera_optical', 'camera_optical', "start with '/'"),
    ('//a/b', 'a/b', "start with '/'"),
    ('', None, 'may not be empty'),
    ('/', None, 'may not be empty'),
])
def test_image_frame_ids_follow_tf2s_rules(frame_id, name, problem):
    from hamer_ros.ros.tf_frames import frame_id_for_tf

    got_name, got_problem = frame_id_for_tf(frame_id)
    assert got_name == name
    assert (got_problem is None) if problem is None else (problem in got_problem and repr(frame_id) in got_problem)


@pytest.mark.parametrize('prefix,name', [('hand_', 'hand_'), ('/abs/', 'abs/'), ('robot1/hand_', 'robot1/hand_'),
                                         ('', None), ('//', None)])
def test_frame_prefixes_follow_tf2s_rules(prefix, name):
    from hamer_ros.ros.tf_frames import frame_prefix_for_tf

    got, problem = frame_prefix_for_tf(prefix)
    assert got == name and (problem is None) == (name == prefix)
    if name is not None:      # every frame name made with it is one tf2 accepts
        rng = np.random.default_rng(5)
        frame = _frame([HandResult(fake_detection('left', 3), fake_reconstruction(rng, False))])
        names = [t.child_frame_id for t in hand_transforms(frame, _header(), got)]
        assert names and all(n and not n.startswith('/') for n in names)


@pytest.mark.parametrize('stage,code', [('palm', HandMesh.STAGE_PALM), ('body', HandMesh.STAGE_BODY),
                                        ('tracked', HandMesh.STAGE_TRACKED), ('external', HandMesh.STAGE_EXTERNAL)])
def test_stage_score_and_box_come_from_the_stage_that_found_the_hand(stage, code):
    detection = fake_detection('left', 1, box=(10.0, 20.0, 50.0, 70.0), score=0.37)
    detection.stage = stage
    hand = HandResult(detection, keypoints_camera_mediapipe=np.ones((21, 3)),
                      translation_mediapipe=np.array([0.0, 0.0, 1.0]))
    msg = deserialize_message(serialize_message(hand_mesh_array(_frame([hand]), _header(), None)), HandMeshArray)
    hand_msg = msg.hands[0]
    assert hand_msg.stage == code and len({HandMesh.STAGE_PALM, HandMesh.STAGE_BODY, HandMesh.STAGE_TRACKED,
                                           HandMesh.STAGE_EXTERNAL}) == 4
    assert hand_msg.detection_score == pytest.approx(0.37)
    assert (hand_msg.box.x_offset, hand_msg.box.y_offset, hand_msg.box.width, hand_msg.box.height) == (10, 20, 40, 50)
