"""FrameResult -> hamer_ros/HandMeshArray, and fast serialization of the mesh markers.

Large float arrays go into message fields as `array.array` built from the numpy bytes: rclpy stores it
as is and copies it with memcpy, two orders of magnitude faster than through a list (docs/ros_environment.md).
Read them back without copying: `numpy.frombuffer(msg.vertices, numpy.float32)`.
"""
from __future__ import annotations

import array
import struct
from typing import Dict, Optional

import numpy as np

from hamer_ros.ros.markers import HandMarkers
# ROS-generated classes, or rosbags stand-ins without ROS (offline bag writing): see message_classes.
from hamer_ros.io.message_classes import HandMesh, HandMeshArray, Point, RegionOfInterest
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


# Field kinds of a message class's plan (`_layout_plan`): how to step over one field.
_PRIMITIVE, _STRING, _MESSAGE, _PRIMITIVES, _MESSAGES = range(5)
_PLANS: Dict[type, list] = {}
_FIXED_SIZES: Dict[tuple, int] = {}


def _layout_plan(message_class) -> list:
    """[(field name, kind, primitive size or 0, has a count)] of `message_class`, from its rosidl type
    description (made once per class)."""
    plan = _PLANS.get(message_class)
    if plan is not None:
        return plan
    from rosidl_parser import definition as types

    plan = []
    for name, slot in zip(message_class.get_fields_and_field_types(), message_class.SLOT_TYPES):
        counted = isinstance(slot, types.AbstractSequence)
        element = slot.value_type if isinstance(slot, types.AbstractNestedType) else slot
        if isinstance(element, types.BasicType):
            entry = (_PRIMITIVES if element is not slot else _PRIMITIVE, _PRIMITIVE_SIZES[element.typename])
        elif isinstance(element, types.AbstractString) and not isinstance(element, types.AbstractWString) \
                and element is slot:
            entry = (_STRING, 0)
        elif isinstance(element, types.NamespacedType):
            entry = (_MESSAGES if element is not slot else _MESSAGE, 0)
        else:
            raise NotImplementedError(f'no CDR layout for {message_class.__name__}.{name}')
        plan.append((name, entry[0], entry[1], counted))
    _PLANS[message_class] = plan
    return plan


def _is_fixed_size(message_class) -> bool:
    """No strings or sequences anywhere inside (checked on an instance for the nested classes)."""
    cached = _FIXED_SIZES.get((message_class, 'fixed'))
    if cached is None:
        instance = message_class()
        cached = all(not counted and (kind in (_PRIMITIVE, _PRIMITIVES) or (
            kind == _MESSAGE and _is_fixed_size(type(getattr(instance, name)))))
            for name, kind, _, counted in _layout_plan(message_class))
        _FIXED_SIZES[(message_class, 'fixed')] = cached
    return cached


def _message_end(message, position: int) -> int:
    """Where `message` ends in plain CDR when it starts at payload offset `position`."""
    message_class = type(message)
    if _is_fixed_size(message_class):
        # Its size depends only on where it starts modulo 8 (every alignment divides 8): walked once per class
        # and residue (points, colours, poses).
        key = (message_class, position % 8)
        if key not in _FIXED_SIZES:
            _FIXED_SIZES[key] = _walk_fields(message, position) - position
        return position + _FIXED_SIZES[key]
    return _walk_fields(message, position)


def _walk_fields(message, position: int, until: Optional[str] = None) -> int:
    """Where the fields of `message` end (or where the field `until` starts)."""
    for name, kind, size, counted in _layout_plan(type(message)):
        if name == until:
            break
        value = getattr(message, name)
        if kind == _PRIMITIVE:
            position = _align(position, size) + size
        elif kind == _STRING:     # uint32 byte count (with the NUL), the bytes, the NUL
            position = _align(position, 4) + 4 + len(value.encode('utf-8')) + 1
        elif kind == _MESSAGE:
            position = _message_end(value, position)
        else:
            if counted:
                position = _align(position, 4) + 4
            position = _sequence_end(value, kind, size, position)
    return position


def _sequence_end(items, kind: int, size: int, position: int) -> int:
    count = len(items)
    if count == 0:
        return position
    if kind == _PRIMITIVES:            # one block, aligned once
        return _align(position, size) + size * count
    first_end = _message_end(items[0], position)
    if count > 1 and _is_fixed_size(type(items[0])):
        # Fixed-size elements: once one element's size is a multiple of 8, every later one starts at the same
        # residue, so is just as long.
        step = _message_end(items[0], first_end) - first_end
        if step % 8 == 0:
            return first_end + step * (count - 1)
    position = first_end
    for item in items[1:]:
        position = _message_end(item, position)
    return position


def _point_count_offsets(message, indices) -> Dict[int, int]:
    """{marker index: payload offset of its `points` count} for the markers `indices` of a MarkerArray."""
    position = _align(0, 4) + 4                         # the marker count
    offsets = {}
    for index, marker in enumerate(message.markers):
        if index in indices:
            offsets[index] = _align(_walk_fields(marker, position, until='points'), 4)
        position = _message_end(marker, position)
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
