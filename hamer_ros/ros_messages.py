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
from hamer_ros.types import FrameResult, HandResult

_SIDE_CODES = {'left': HandMesh.SIDE_LEFT, 'right': HandMesh.SIDE_RIGHT}


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
                   box=box_roi(detection.box_xyxy, frame.width, frame.height))
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
# rclpy serializes the MarkerArray except the big point blocks: each TRIANGLE_LIST marker gets one placeholder
# point, whose 24 bytes are then replaced by the whole (N, 3) float64 block and whose sequence count by N.
# Where the count sits is computed from the message layout (`_point_count_offsets`), not searched for:
# plain CDR (XCDR1, the encapsulation rclpy's middleware writes; checked on every call) puts each primitive at the
# next multiple of its size (at most 8) counted from the start of the payload, just after the 4-byte
# encapsulation header; a string is a uint32 byte count (with the terminating NUL) and the bytes; a sequence is
# a uint32 element count and the elements; nested messages add no bytes of their own. So the placeholder point
# starts at the first multiple of 8 after its count, and swapping its 24 bytes for N*24 keeps every later
# field's offset the same modulo 8: their padding, hence their bytes, do not change. A marker with no corners
# is serialized by rclpy as it is (no placeholder). `fast_markers_work` still compares the result with rclpy's
# own serialization once per process; where they differ the caller uses ordinary messages.

_PLACEHOLDER = (-7.291435e-301, 1.0, 3.1705e-299)       # checked where the layout says the point is
_PRIMITIVE_SIZES = {'boolean': 1, 'octet': 1, 'char': 1, 'uint8': 1, 'int8': 1, 'int16': 2, 'uint16': 2,
                    'int32': 4, 'uint32': 4, 'float': 4, 'int64': 8, 'uint64': 8, 'double': 8}


def _align(position: int, size: int) -> int:
    size = min(size, 8)
    return (position + size - 1) // size * size


def _cdr_end(value, slot, position: int) -> int:
    """Where `value` (of rosidl type `slot`) ends when it starts at payload offset `position` (plain CDR)."""
    from rosidl_parser import definition as types

    if isinstance(slot, types.BasicType):
        size = _PRIMITIVE_SIZES[slot.typename]
        return _align(position, size) + size
    if isinstance(slot, types.AbstractString) and not isinstance(slot, types.AbstractWString):
        return _align(position, 4) + 4 + len(value.encode('utf-8')) + 1
    if isinstance(slot, types.NamespacedType):
        if _is_fixed_size(type(value)):
            # No strings or sequences: its size depends only on where it starts modulo 8 (every alignment is a
            # divisor of 8), so it is walked once per class and residue (points, colours, poses).
            key = (type(value), position % 8)
            if key not in _FIXED_SIZES:
                _FIXED_SIZES[key] = _cdr_message_end(value, position) - position
            return position + _FIXED_SIZES[key]
        return _cdr_message_end(value, position)
    if isinstance(slot, types.AbstractNestedType):
        if isinstance(slot, types.AbstractSequence):
            position = _align(position, 4) + 4          # the element count
        element = slot.value_type
        if isinstance(element, types.BasicType):       # one block: aligned once (when there are elements)
            size = _PRIMITIVE_SIZES[element.typename]
            return _align(position, size) + size * len(value) if len(value) else position
        for item in value:
            position = _cdr_end(item, element, position)
        return position
    raise NotImplementedError(f'no CDR layout for {type(slot).__name__} fields')


_FIXED_SIZES: Dict[tuple, int] = {}


def _is_fixed_size(message_class) -> bool:
    cached = getattr(message_class, '_hamer_ros_fixed_size', None)
    if cached is None:
        from rosidl_parser import definition as types

        def fixed(slot) -> bool:
            if isinstance(slot, types.Array):
                return fixed(slot.value_type)
            return isinstance(slot, types.BasicType)
        # A nested message counts as fixed when all of its fields are: checked on an instance of it.
        cached = all(fixed(slot) or (isinstance(slot, types.NamespacedType)
                                     and _is_fixed_size(type(getattr(message_class(), name))))
                     for name, slot in zip(message_class.get_fields_and_field_types(), message_class.SLOT_TYPES))
        message_class._hamer_ros_fixed_size = cached
    return cached


def _cdr_message_end(message, position: int) -> int:
    for name, slot in zip(type(message).get_fields_and_field_types(), type(message).SLOT_TYPES):
        position = _cdr_end(getattr(message, name), slot, position)
    return position


def _point_count_offsets(message, indices) -> Dict[int, int]:
    """{marker index: payload offset of its `points` count} for the markers `indices` of a MarkerArray."""
    marker_slots = None
    position = _align(0, 4) + 4                         # the marker count
    offsets = {}
    for index, marker in enumerate(message.markers):
        if marker_slots is None:
            marker_slots = list(zip(type(marker).get_fields_and_field_types(), type(marker).SLOT_TYPES))
        for name, slot in marker_slots:
            if name == 'points' and index in indices:
                offsets[index] = _align(position, 4)
            position = _cdr_end(getattr(marker, name), slot, position)
    return offsets


def serialize_hand_markers(markers: HandMarkers) -> bytes:
    """The CDR bytes of `markers.filled()` without building one Point per triangle corner."""
    from rclpy.serialization import serialize_message   # here: hand_mesh_array works without rclpy

    message = markers.message
    order = sorted(index for index, corners in markers.triangle_points.items() if len(corners))
    for index in markers.triangle_points:
        message.markers[index].points = []
    for index in order:
        message.markers[index].points = [Point(x=_PLACEHOLDER[0], y=_PLACEHOLDER[1], z=_PLACEHOLDER[2])]
    try:
        raw = serialize_message(message)
        # Encapsulation header: 0x0000 plain CDR big endian, 0x0001 little endian; anything else (XCDR2 aligns
        # 8-byte values to 4) has another layout.
        if raw[0] != 0 or raw[1] not in (0, 1):
            raise RuntimeError(f'marker serialization: encapsulation {raw[:2].hex()} is not plain CDR')
        endian = '<' if raw[1] == 1 else '>'
        offsets = _point_count_offsets(message, set(order))
        placeholder = struct.pack(endian + 'ddd', *_PLACEHOLDER)
        parts, position = [], 0
        for index in order:
            count_at = 4 + offsets[index]                       # 4: the encapsulation header
            points_at = 4 + _align(offsets[index] + 4, 8)
            if (struct.unpack_from(endian + 'I', raw, count_at)[0] != 1
                    or raw[points_at:points_at + 24] != placeholder):
                raise RuntimeError('marker serialization: the point block is not where the CDR layout puts it')
            corners = np.ascontiguousarray(markers.triangle_points[index], dtype=endian + 'f8')
            parts += [raw[position:count_at], struct.pack(endian + 'I', len(corners)), raw[count_at + 4:points_at],
                      corners.tobytes()]
            position = points_at + 24
        parts.append(raw[position:])
    finally:
        for index in order:
            message.markers[index].points = []
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
    except (RuntimeError, NotImplementedError):
        return False
    # Compared as messages: CDR padding bytes are not initialised, so equal messages can differ in bytes.
    reference = serialize_message(probe.filled())
    return deserialize_message(fast, MarkerArray) == deserialize_message(reference, MarkerArray)
