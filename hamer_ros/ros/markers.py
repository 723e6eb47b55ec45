"""RViz markers for the hands of one frame, built as plain functions (no node, no rclpy).

Per hand, in the camera optical frame of the input image (its header is copied):
  ns `hand_mesh`      TRIANGLE_LIST  the MANO mesh closed at the wrist, wound outwards for its side
  ns `hand_joints`    SPHERE_LIST    the 21 joints
  ns `hand_skeleton`  LINE_LIST      the 20 bones
Marker ids are the tracker's track ids (the hand's index when untracked), so one hand keeps its markers
across frames; `MarkerBuilder` remembers what it published and sends DELETE for hands that vanished.
In landmarks-only mode there is no mesh, only joints and skeleton.

The mesh points are the expensive part (3 x 1552 = 4656 points per hand): building that many
geometry_msgs/Point objects and rclpy's conversion of them cost milliseconds per hand (docs/performance.md), so the
builder hands the triangle vertices over as a numpy array (`HandMarkers.triangle_points`); the node
serializes them in one block (hamer_ros.ros.ros_messages.serialize_hand_markers), and `HandMarkers.filled()`
makes the ordinary message where speed does not matter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from hamer_ros.hamer.mano import OPENPOSE_PARENTS
# ROS-generated classes, or rosbags stand-ins without ROS (offline bag writing): see message_classes.
from hamer_ros.io.message_classes import ColorRGBA, Marker, MarkerArray, Point
from hamer_ros.pipeline import hand_keypoints_camera
from hamer_ros.types import FrameResult

MESH_NS, JOINTS_NS, SKELETON_NS = 'hand_mesh', 'hand_joints', 'hand_skeleton'

# (parent, child) pairs of the OpenPose hand skeleton, for LINE_LIST.
_BONES = np.array([(parent, child) for child, parent in enumerate(OPENPOSE_PARENTS) if parent >= 0])

RGB = Tuple[float, float, float]


@dataclass
class MarkerStyle:
    """How hands look in RViz. Colours are RGB in [0, 1], sizes in metres."""
    color_left: RGB = (0.96, 0.69, 0.51)
    color_right: RGB = (0.65, 0.74, 0.86)     # the HaMeR demo's light blue
    alpha: float = 1.0                        # mesh opacity
    joint_diameter: float = 0.008
    bone_width: float = 0.004
    mesh: bool = True
    joints: bool = True
    skeleton: bool = True

    def color(self, side: str, alpha: float, shade: float = 1.0) -> ColorRGBA:
        r, g, b = self.color_left if side == 'left' else self.color_right
        return ColorRGBA(r=float(r * shade), g=float(g * shade), b=float(b * shade), a=float(alpha))


@dataclass
class HandMarkers:
    """A MarkerArray whose TRIANGLE_LIST markers still lack their points, plus those points as arrays."""
    message: MarkerArray
    # index into message.markers -> (3 x faces, 3) float64 triangle corners, camera frame, m
    triangle_points: Dict[int, np.ndarray] = field(default_factory=dict)

    def filled(self) -> MarkerArray:
        """The complete MarkerArray with geometry_msgs/Point objects (slow; for tests and tools)."""
        for index, corners in self.triangle_points.items():
            self.message.markers[index].points = points_from_array(corners)
        self.triangle_points = {}
        return self.message


def points_from_array(points: np.ndarray) -> List[Point]:
    return [Point(x=x, y=y, z=z) for x, y, z in np.asarray(points, np.float64).tolist()]


class MarkerBuilder:
    """Builds each frame's markers and deletes the markers of hands that are gone."""

    def __init__(self, style: Optional[MarkerStyle] = None):
        self.style = style or MarkerStyle()
        self._published: Set[Tuple[str, int]] = set()

    def build(self, frame: FrameResult, header, faces: Optional[Dict[str, np.ndarray]] = None) -> HandMarkers:
        """Markers of `frame`, stamped with `header`; faces: `hamer_ros.pipeline.faces_by_side(model.faces)`
        (None in landmarks-only mode)."""
        style = self.style
        out = HandMarkers(MarkerArray())
        markers = out.message.markers
        for index, hand in enumerate(frame.hands):
            side = hand.detection.side
            marker_id = hand.detection.track_id if hand.detection.track_id >= 0 else index
            if style.mesh and hand.reconstruction is not None and faces is not None:
                out.triangle_points[len(markers)] = hand.reconstruction.vertices_camera[faces[side]].reshape(-1, 3)
                markers.append(_marker(header, MESH_NS, marker_id, Marker.TRIANGLE_LIST, (1.0, 1.0, 1.0),
                                       style.color(side, style.alpha)))
            keypoints = hand_keypoints_camera(hand)
            if style.joints:
                size = style.joint_diameter
                joints = _marker(header, JOINTS_NS, marker_id, Marker.SPHERE_LIST, (size, size, size),
                                 style.color(side, 1.0, shade=0.6))
                joints.points = points_from_array(keypoints)
                markers.append(joints)
            if style.skeleton:
                bones = _marker(header, SKELETON_NS, marker_id, Marker.LINE_LIST, (style.bone_width, 0.0, 0.0),
                                style.color(side, 1.0, shade=0.8))
                bones.points = points_from_array(keypoints[_BONES.reshape(-1)])
                markers.append(bones)
        current = {(m.ns, m.id) for m in markers}
        for ns, marker_id in sorted(self._published - current):
            markers.append(_marker(header, ns, marker_id, Marker.TRIANGLE_LIST, (1.0, 1.0, 1.0), ColorRGBA(),
                                   action=Marker.DELETE))
        self._published = current
        return out

    def delete_all(self, header) -> MarkerArray:
        """One DELETEALL (e.g. when marker publishing is switched off or the node stops)."""
        self._published = set()
        marker = Marker(header=header, action=Marker.DELETEALL)
        return MarkerArray(markers=[marker])


def _marker(header, ns: str, marker_id: int, marker_type: int, scale, color: ColorRGBA,
            action: int = Marker.ADD) -> Marker:
    marker = Marker(header=header, ns=ns, id=int(marker_id), type=marker_type, action=action, color=color)
    marker.pose.orientation.w = 1.0      # identity: the points are already in the camera frame
    marker.scale.x, marker.scale.y, marker.scale.z = (float(v) for v in scale)
    return marker
