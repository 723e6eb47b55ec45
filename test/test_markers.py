"""RViz markers: one closed, outward-wound mesh per hand, joints and skeleton, ids per track, deletions."""
import numpy as np
import pytest

pytest.importorskip('visualization_msgs.msg', reason='needs the ROS 2 environment: . scripts/env.sh')

from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from hamer_ros.hamer.mano import OPENPOSE_PARENTS  # noqa: E402
from hamer_ros.ros.markers import JOINTS_NS, MESH_NS, SKELETON_NS, MarkerBuilder, MarkerStyle  # noqa: E402
from hamer_ros.pipeline import faces_by_side  # noqa: E402
from hamer_ros.types import CameraIntrinsics, FrameResult, HandResult  # noqa: E402

from node_fakes import fake_detection, fake_reconstruction, random_faces  # noqa: E402


def _header(sec=7, frame_id='camera_optical'):
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, 250
    return header


def _frame(hands):
    return FrameResult(width=640, height=480, intrinsics=CameraIntrinsics(600.0, 600.0, 320.0, 240.0), hands=hands)


def _two_hands(rng, ids=(3, 5)):
    left = HandResult(fake_detection('left', ids[0]), fake_reconstruction(rng, False))
    right = HandResult(fake_detection('right', ids[1]), fake_reconstruction(rng, True, cam_t=(-0.1, 0, 0.7)))
    return [left, right]


def _points(marker):
    return np.array([(p.x, p.y, p.z) for p in marker.points])


def _signed_volume(triangles):
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    return np.einsum('ij,ij->i', a, np.cross(b, c)).sum() / 6.0


def test_two_hands_give_mesh_joints_and_skeleton_each():
    rng = np.random.default_rng(0)
    hands = _two_hands(rng)
    faces = faces_by_side(random_faces())
    style = MarkerStyle(color_left=(1.0, 0.5, 0.0), color_right=(0.0, 0.5, 1.0), alpha=0.7)
    header = _header()
    markers = MarkerBuilder(style).build(_frame(hands), header, faces).filled()

    assert [(m.ns, m.id, m.type) for m in markers.markers] == [
        (MESH_NS, 3, Marker.TRIANGLE_LIST), (JOINTS_NS, 3, Marker.SPHERE_LIST), (SKELETON_NS, 3, Marker.LINE_LIST),
        (MESH_NS, 5, Marker.TRIANGLE_LIST), (JOINTS_NS, 5, Marker.SPHERE_LIST), (SKELETON_NS, 5, Marker.LINE_LIST)]
    for marker in markers.markers:
        assert marker.header == header and marker.action == Marker.ADD and marker.pose.orientation.w == 1.0
    for hand, (mesh, joints, bones) in zip(hands, (markers.markers[:3], markers.markers[3:])):
        recon, side = hand.reconstruction, hand.detection.side
        # 1552 triangles (wrist closed), corners = the camera-frame vertices in this side's winding.
        corners = _points(mesh)
        assert corners.shape == (1552 * 3, 3)
        np.testing.assert_allclose(corners, recon.vertices_camera[faces[side]].reshape(-1, 3), atol=1e-7)
        colour = style.color_left if side == 'left' else style.color_right
        assert (mesh.color.r, mesh.color.g, mesh.color.b) == pytest.approx(colour)
        assert mesh.color.a == pytest.approx(0.7)
        np.testing.assert_allclose(_points(joints), recon.keypoints_camera, atol=1e-7)
        bone_ends = _points(bones).reshape(20, 2, 3)
        for (start, end), child in zip(bone_ends, range(1, 21)):
            np.testing.assert_allclose(start, recon.keypoints_camera[OPENPOSE_PARENTS[child]], atol=1e-7)
            np.testing.assert_allclose(end, recon.keypoints_camera[child], atol=1e-7)


def test_left_mesh_of_a_mirrored_right_hand_keeps_the_outward_winding():
    # Mirroring the vertices (x -> -x) flips the sign of the enclosed volume; the left faces turn it back.
    rng = np.random.default_rng(1)
    right = fake_reconstruction(rng, True, cam_t=(0, 0, 0))
    faces = faces_by_side(random_faces())
    left = fake_reconstruction(rng, False, cam_t=(0, 0, 0))
    left.vertices = right.vertices * np.array([-1.0, 1.0, 1.0], np.float32)
    frame = _frame([HandResult(fake_detection('right', 1), right), HandResult(fake_detection('left', 2), left)])
    markers = MarkerBuilder().build(frame, _header(), faces).filled().markers
    right_volume = _signed_volume(_points(markers[0]).reshape(-1, 3, 3))
    left_volume = _signed_volume(_points(markers[3]).reshape(-1, 3, 3))
    assert right_volume != 0 and left_volume == pytest.approx(right_volume, rel=1e-9)


def test_vanished_hands_are_deleted_and_landmarks_only_has_no_mesh():
    rng = np.random.default_rng(2)
    builder = MarkerBuilder()
    faces = faces_by_side(random_faces())
    builder.build(_frame(_two_hands(rng)), _header(1), faces)

    # Track 5 leaves; track 3 stays, now landmarks-only (no reconstruction, placed MediaPipe joints).
    landmarks_hand = HandResult(fake_detection('left', 3),
                                keypoints_camera_mediapipe=rng.standard_normal((21, 3)) + [0, 0, 5])
    second = builder.build(_frame([landmarks_hand]), _header(2), None).filled().markers
    assert [(m.ns, m.id, m.action) for m in second] == [
        (JOINTS_NS, 3, Marker.ADD), (SKELETON_NS, 3, Marker.ADD),
        (JOINTS_NS, 5, Marker.DELETE), (MESH_NS, 3, Marker.DELETE), (MESH_NS, 5, Marker.DELETE),
        (SKELETON_NS, 5, Marker.DELETE)]
    np.testing.assert_allclose(_points(second[0]), landmarks_hand.keypoints_camera_mediapipe)
    assert all(m.header.stamp.sec == 2 for m in second)

    # No hand at all: everything still shown is deleted, then nothing more is sent.
    third = builder.build(_frame([]), _header(3), faces).filled().markers
    assert sorted((m.ns, m.id, m.action) for m in third) == [(JOINTS_NS, 3, Marker.DELETE),
                                                              (SKELETON_NS, 3, Marker.DELETE)]
    assert builder.build(_frame([]), _header(4), faces).filled().markers == []


def test_untracked_hands_use_their_index_and_style_switches_parts_off():
    rng = np.random.default_rng(3)
    hands = _two_hands(rng, ids=(-1, -1))
    style = MarkerStyle(joints=False, skeleton=False)
    markers = MarkerBuilder(style).build(_frame(hands), _header(), faces_by_side(random_faces())).filled()
    assert [(m.ns, m.id) for m in markers.markers] == [(MESH_NS, 0), (MESH_NS, 1)]


def test_delete_all_resets():
    builder = MarkerBuilder()
    rng = np.random.default_rng(4)
    builder.build(_frame(_two_hands(rng)), _header(), faces_by_side(random_faces()))
    reset = builder.delete_all(_header(9))
    assert [m.action for m in reset.markers] == [Marker.DELETEALL] and reset.markers[0].header.stamp.sec == 9
    assert builder.build(_frame([]), _header(10), None).filled().markers == []
