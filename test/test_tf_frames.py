"""TF frames a consumer can rely on: names that stay with a hand's track, prefixes per namespace, wrist-only mode,
position-only frames without HaMeR, and the documented joint axes (checked on the real network's output)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hamer_ros.hamer import mano as mano_lib
from hamer_ros.ros.tf_frames import HandFrameNames, hand_transforms, resolve_frame_prefix
from hamer_ros.detection.tracking import HandTracker
from hamer_ros.types import CameraIntrinsics, FrameResult, HandDetection, HandReconstruction, HandResult

from node_fakes import fake_detection, fake_reconstruction


def frame_of(detections, landmarks_only=False):
    rng = np.random.default_rng(0)
    hands = [HandResult(d, keypoints_camera_mediapipe=rng.standard_normal((21, 3))) if landmarks_only
             else HandResult(d, fake_reconstruction(rng, d.is_right)) for d in detections]
    return FrameResult(640, 480, CameraIntrinsics(600.0, 600.0, 320.0, 240.0), hands=hands)


def box_at(x):
    return (x, 100.0, x + 80.0, 200.0)


def test_names_stay_with_their_track_when_a_second_hand_of_that_side_comes_and_goes():
    """The old naming renamed hand_right_wrist to hand_right_3_wrist as soon as a second right hand appeared."""
    tracker = HandTracker()
    names = HandFrameNames(hold_frames=tracker.max_missed_frames)
    seen = []
    scenes = ([box_at(100)], [box_at(105), box_at(400)], [box_at(110), box_at(405)], [box_at(410)],
              [box_at(415)], [box_at(420), box_at(120)])
    for index, boxes in enumerate(scenes):
        detections = tracker.update([HandDetection(np.array(b), 'right') for b in boxes], stamp_s=index * 0.1)
        frame = frame_of(detections)
        stems = names.stems(frame)
        seen.append({d.track_id: s for d, s in zip(detections, stems)})
        names_now = [t.child_frame_id for t in hand_transforms(frame, None, 'hand_', stems, 'wrist')]
        assert len(names_now) == len(set(names_now)) == len(boxes)
    first, second = 0, 1
    assert [s.get(first) for s in seen[:3]] == ['right_'] * 3
    assert [s.get(second) for s in seen[1:]] == ['right_1_'] * 5       # keeps its name after the first left
    # The first hand was away for two frames (within the tracker's max_missed_frames): same track, same name.
    assert seen[5][first] == 'right_'


def test_a_name_is_freed_when_its_track_is_gone_and_sides_are_part_of_it():
    names = HandFrameNames(hold_frames=1)
    assert names.stems(frame_of([fake_detection('right', 4), fake_detection('left', 5)])) == ['right_', 'left_']
    names.stems(frame_of([]))
    assert names.stems(frame_of([fake_detection('right', 6)])) == ['right_6_']    # 4 may still come back
    names.stems(frame_of([]))
    names.stems(frame_of([]))
    assert names.stems(frame_of([fake_detection('right', 7)])) == ['right_']      # 4 and 6 are gone
    # The tracker changed track 7's side: the name follows the side.
    assert names.stems(frame_of([fake_detection('left', 7)])) == ['left_']
    # Untracked hands: by side and order.
    assert HandFrameNames().stems(frame_of([fake_detection('right'), fake_detection('right')])) == \
        ['right_', 'right_1_']
    names.reset()
    assert names.stems(frame_of([fake_detection('right', 6)])) == ['right_']


@pytest.mark.parametrize('namespace, template, expected', [
    ('/', '{namespace}hand_', 'hand_'), ('/cam1', '{namespace}hand_', 'cam1/hand_'),
    ('/robot/left_cam/', '{namespace}hand_', 'robot/left_cam/hand_'), ('/cam1', 'fixed_', 'fixed_')])
def test_frame_prefix_includes_the_namespace(namespace, template, expected):
    assert resolve_frame_prefix(template, namespace) == expected


def test_wrist_only_and_position_only_frames():
    detections = [fake_detection('right', 1), fake_detection('left', 2)]
    full = hand_transforms(frame_of(detections), None, 'cam1/hand_', frames='joints')
    wrist = hand_transforms(frame_of(detections), None, 'cam1/hand_', frames='wrist')
    assert [t.child_frame_id for t in wrist] == ['cam1/hand_right_wrist', 'cam1/hand_left_wrist']
    assert [t.transform for t in wrist] == [full[0].transform, full[21].transform]
    assert len(full) == 42
    landmarks = hand_transforms(frame_of(detections, landmarks_only=True), None, 'hand_', frames='wrist')
    assert [t.child_frame_id for t in landmarks] == ['hand_right_wrist_position', 'hand_left_wrist_position']
    with pytest.raises(ValueError, match='frames must be one of joints, wrist'):
        hand_transforms(frame_of(detections), None, frames='tips')


def test_wrist_frame_axes_follow_the_documented_convention(public_case):
    """On the real network's output for a real right hand (the public fixture) and its mirror image as a left hand:
    +x from the wrist towards the fingers for right hands (towards the wrist for left ones), +y out of the palm
    (the side the index-to-pinky knuckles turn around), +z towards the thumb side."""
    keypoints = public_case['pred_keypoints_3d'][0].astype(np.float64)
    orient = public_case['global_orient'][0, 0].astype(np.float64)
    mirror = np.diag([-1.0, 1.0, 1.0])
    for side, points, rotation in (('right', keypoints, orient),
                                   ('left', keypoints @ mirror, mirror @ orient @ mirror)):
        joints = np.broadcast_to(rotation, (16, 3, 3)).copy()
        hand = HandReconstruction(is_right=side == 'right', pred_cam=np.zeros(3), global_orient=rotation,
                                  hand_pose=np.zeros((15, 3, 3)), betas=np.zeros(10), vertices=np.zeros((778, 3)),
                                  keypoints_3d=points, cam_t=np.array([0.0, 0.0, 0.5]), keypoints_2d=np.zeros((21, 2)),
                                  joint_rotations=joints, box_center=np.zeros(2), box_size=1.0,
                                  focal_length=np.ones(2))
        frame = FrameResult(640, 480, CameraIntrinsics(600.0, 600.0, 320.0, 240.0),
                            hands=[HandResult(fake_detection(side, 1), hand)])
        (wrist,) = hand_transforms(frame, None, frames='wrist')
        q = wrist.transform.rotation
        x_axis, y_axis, z_axis = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix().T
        names = mano_lib.OPENPOSE_JOINT_NAMES

        def direction(joint):
            vector = points[names.index(joint)] - points[0]
            return vector / np.linalg.norm(vector)

        towards_fingers = direction('middle_mcp')
        assert np.dot(x_axis, towards_fingers) * (1 if side == 'right' else -1) > 0.9, side
        palm_normal = np.cross(direction('index_mcp'), direction('pinky_mcp'))
        palm_normal *= 1 if side == 'right' else -1      # a mirror image turns the other way round
        assert np.dot(y_axis, palm_normal / np.linalg.norm(palm_normal)) > 0.9, side
        thumb_side = direction('index_mcp') - direction('pinky_mcp')
        assert np.dot(z_axis, thumb_side / np.linalg.norm(thumb_side)) > 0.8, side
