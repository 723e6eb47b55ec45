"""FrameResult -> hamer_ros/HandMeshArray, and fast serialization of the mesh markers.

Large float arrays go into message fields as `array.array` built from the numpy bytes: rclpy stores it
as is and copies it with memcpy (0.002 ms for 2334 floats, against 0.36 ms through a list; ROS2_ENV.md).
Read them back without copying: `numpy.frombuffer(msg.vertices, numpy.float32)`.
"""
from __future__ import annotations

import array
import struct
from typing import Dict, Optional

import numpy as np

from hamer_ros.markers import HandMarkers
# ROS-generated classes, or rosbags stand-ins without ROS (offline bag writing): see message_classes.
from hamer_ros.message_classes import HandMesh, HandMeshArray, Point, RegionOfInterest
from hamer_ros.types import STAGE_BODY, STAGE_EXTERNAL, STAGE_PALM, STAGE_TRACKED, FrameResult, HandResult

_SIDE_CODES = {'left': HandMesh.SIDE_LEFT, 'right': HandMesh.SIDE_RIGHT}
_STAGE_CODES = {STAGE_PALM: HandMesh.STAGE_PALM, STAGE_BODY: HandMesh.STAGE_BODY,
                STAGE_TRACKED: HandMesh.STAGE_TRACKED, STAGE_EXTERNAL: HandMesh.STAGE_EXTERNAL}


def _float32(values) -> array.array:
    return array.array('f', np.ascontiguousarray(values, dtype=np.float32).tobytes())


def _uint32(values) -> array.array:
    return array.array('I', np.ascontiguousarray(values, dtype=np.uint32).tobytes())


def box_roi(box_xyxy, width: int, height: int) -> RegionOfInterest:
    """The detector box rounded outwards to whole pixels and clipped to the image."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    left = min(max(int(np.floor(x0)), 0), max(width - 1, 0))
    top = min(max(int(np.floor(y0)), 0), max(height - 1, 0))
    right = min(max(int(np.ceil(x1)), left), width)
    bottom = min(max(int(np.ceil(y1)), top), height)
    return RegionOfInterest(x_offset=left, y_offset=top, width=right - left, height=bottom - top)


def hand_mesh(hand: HandResult, header, frame: FrameResult,
              faces: Optional[Dict[str, np.ndarray]] = None) -> HandMesh:
    """One HandMesh; `faces` is `hamer_ros.pipeline.faces_by_side(model.faces)` (needed for HaMeR hands)."""
    detection = hand.detection
    msg = HandMesh(header=header, track_id=int(detection.track_id), side=_SIDE_CODES[detection.side],
                   side_confidence=float(detection.side_score), detection_score=float(detection.score),
                   box=box_roi(detection.box_xyxy, frame.width, frame.height),
                   stage=_STAGE_CODES[detection.stage])
    recon = hand.reconstruction
    if recon is not None:
        msg.source = HandMesh.SOURCE_HAMER
        msg.global_orient = _float32(recon.global_orient)
        msg.hand_pose = _float32(recon.hand_pose)
        msg.betas = _float32(recon.betas)
        translation = recon.cam_t
        msg.keypoints_3d = _float32(recon.keypoints_camera)
        msg.keypoints_2d = _float32(recon.keypoints_2d)
        msg.vertices = _float32(recon.vertices_camera)
        if faces is None:
            raise ValueError('hand_mesh needs the faces (pipeline.faces_by_side(model.faces)) for HaMeR hands')
        msg.faces = _uint32(faces[detection.side])
    else:
        msg.source = HandMesh.SOURCE_MEDIAPIPE
        translation = hand.translation_mediapipe
        msg.keypoints_3d = _float32(hand.keypoints_camera_mediapipe)
        msg.keypoints_2d = _float32(detection.landmarks_2d)
    msg.translation.x, msg.translation.y, msg.translation.z = (float(v) for v in np.asarray(translation).reshape(3))
    return msg


def hand_mesh_array(frame: FrameResult, header, faces: Optional[Dict[str, np.ndarray]] = None) -> HandMeshArray:
    """The HandMeshArray of one frame (an empty `hands` when no hand was found)."""
    intrinsics = frame.intrinsics
    return HandMeshArray(header=header, image_width=int(frame.width), image_height=int(frame.height),
                         fx=float(intrinsics.fx), fy=float(intrinsics.fy), cx=float(intrinsics.cx),
                         cy=float(intrinsics.cy), intrinsics_from_camera_info=bool(intrinsics.from_camera_info),
                         hands=[hand_mesh(hand, header, frame, faces) for hand in frame.hands])


# ------------------------------------------------------------------------------ fast marker serialization
#
# rclpy serializes the MarkerArray except the big point blocks: each TRIANGLE_LIST marker gets a single
# sentinel point, whose 24 bytes are then replaced by the whole (N, 3) float64 block and whose sequence
# length by N. That is exact because a sequence of geometry_msgs/Point is a uint32 count followed by
# packed doubles, and N*24 bytes keep every later field's alignment (CDR aligns to at most 8). Whether
# this holds for the middleware at hand is checked once against rclpy's own serialization (`fast_markers_work`);
# where it does not, the caller falls back to ordinary messages.

_SENTINEL_X, _SENTINEL_Z = -7.291435e-301, 3.1705e-299     # values no marker ever holds


def serialize_hand_markers(markers: HandMarkers) -> bytes:
    """The CDR bytes of `markers.filled()` without building one Point per triangle corner."""
    from rclpy.serialization import serialize_message   # here: hand_mesh_array works without rclpy

    message = markers.message
    order = sorted(markers.triangle_points)
    for k, index in enumerate(order):
        message.markers[index].points = [Point(x=_SENTINEL_X, y=float(k), z=_SENTINEL_Z)]
    raw = serialize_message(message)
    # CDR encapsulation header: second byte 1 = little endian, 0 = big endian.
    endian = '<' if raw[1] & 1 else '>'
    parts, position = [], 0
    for k, index in enumerate(order):
        sentinel = struct.pack(endian + 'ddd', _SENTINEL_X, float(k), _SENTINEL_Z)
        at = raw.find(sentinel, position)
        if at < 8 or raw.find(sentinel, at + 1) >= 0:
            raise RuntimeError('marker serialization: sentinel point not found exactly once')
        # The count sits right before the doubles, or 4 bytes earlier when they needed padding to 8.
        count_at = at - 4 if struct.unpack_from(endian + 'I', raw, at - 4)[0] == 1 else at - 8
        if struct.unpack_from(endian + 'I', raw, count_at)[0] != 1:
            raise RuntimeError('marker serialization: no point count before the sentinel point')
        corners = np.ascontiguousarray(markers.triangle_points[index], dtype=endian + 'f8')
        parts += [raw[position:count_at], struct.pack(endian + 'I', len(corners)), raw[count_at + 4:at],
                  corners.tobytes()]
        position = at + 24
        message.markers[index].points = []
    parts.append(raw[position:])
    return b''.join(parts)


def fast_markers_work() -> bool:
    """True when `serialize_hand_markers` gives back exactly the full message for a probe with two meshes."""
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker, MarkerArray

    rng = np.random.default_rng(0)
    header = Header(frame_id='probe')
    probe = HandMarkers(MarkerArray(markers=[
        Marker(header=header, ns='a', id=1, type=Marker.TRIANGLE_LIST),
        Marker(header=header, ns='b', id=2, type=Marker.SPHERE_LIST, points=[Point(x=1.0, y=2.0, z=3.0)]),
        Marker(header=header, ns='c', id=3, type=Marker.TRIANGLE_LIST, text='odd length')]))
    probe.triangle_points = {0: rng.standard_normal((9, 3)), 2: rng.standard_normal((3, 3))}
    try:
        fast = serialize_hand_markers(probe)
    except RuntimeError:
        return False
    # Compared as messages: CDR padding bytes are not initialised, so equal messages can differ in bytes.
    reference = serialize_message(probe.filled())
    return deserialize_message(fast, MarkerArray) == deserialize_message(reference, MarkerArray)
