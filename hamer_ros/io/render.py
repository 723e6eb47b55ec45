"""Overlay rendering of hand meshes and landmarks on the CPU: no OpenGL context, no display.

Why a rasteriser of our own: the official demo renders with pyrender, which needs an OpenGL context
(EGL/OSMesa) that headless machines, containers and CI often lack, and OpenCV has no depth-tested triangle
fill. The meshes are small (two hands: 2 x 778 vertices, 2 x 1552 faces), so a vectorised NumPy rasteriser
is fast enough and exact.

How (`rasterize`): a scanline z-buffer, vectorised over all triangles of all meshes at once.
  1. Cull back faces (signed screen area) and faces with a vertex behind the near plane.
  2. Expand every triangle into its pixel rows (`np.repeat`), intersect each row with the triangle's three
     edge half-planes to get the covered span [x_left, x_right] analytically, and expand the spans into
     pixels. Only covered pixels are ever materialised (about 30 k for two 200-px hands), never bounding
     boxes; per pixel, depth and shading are affine along the row, one gather each.
  3. Depth test per pixel with one `np.maximum.at` on a key holding 1/z (affine in screen space, hence exact
     for a pinhole camera; quantised to 30 bits of the frame's range) above the fragment's row, so the
     maximum is the nearest fragment and names its triangle. Depth order is therefore per pixel: between
     hands and within a hand (fingers over the palm), also for interpenetrating meshes.
Alternatives that measured slower (`benchmarks/bench_render.py`, figures in docs/performance.md): painter's
algorithm with one `cv2.fillConvexPoly` per front face sorted back to front (per-call overhead; depth order per
triangle only) and a barycentric test over power-of-two bounding-box stencils (several times more candidate
pixels than covered ones).

Conventions: vertices in the camera optical frame (REP-103: x right, y down, z forward, metres), pixel
centres at integer coordinates (hamer_ros.types). A pixel belongs to a triangle when its centre lies inside
or on an edge (1e-4 px tolerance, so shared edges leave no cracks). Faces are wound counter-clockwise seen
from outside (outward normals, as MANO's right-hand faces; left hands use the reversed winding, docs/model.md §4/§7).

Shading: a headlight (point light at the camera centre), Lambert with ambient term; 'smooth' interpolates
per-vertex intensities from area-weighted vertex normals with the screen-space barycentrics (Gouraud; the
perspective error is invisible on triangles a few pixels wide), 'flat' uses one intensity per face.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from hamer_ros.hamer.camera import project_points
from hamer_ros.hamer.topology import OPENPOSE_PARENTS, faces_by_side
from hamer_ros.types import CameraIntrinsics, HandResult

# BGR, 0-255. Right: the HaMeR demo's LIGHT_BLUE (0.651, 0.741, 0.859 RGB); left: a warm counterpart.
SIDE_COLORS = {'right': (219.0, 189.0, 166.0), 'left': (130.0, 175.0, 245.0)}
# Distinct colours for per-track colouring (BGR).
TRACK_COLORS = ((219, 189, 166), (130, 175, 245), (150, 220, 150), (200, 150, 220), (120, 220, 230),
                (230, 200, 120), (180, 180, 250), (160, 210, 200))
# OpenPose hand order (docs/model.md §4): 0 wrist, 1-4 thumb, 5-8 index, 9-12 middle, 13-16 ring, 17-20 pinky.
# Skeleton line colour per finger (BGR): thumb, index, middle, ring, pinky.
FINGER_COLORS = ((0, 140, 255), (0, 215, 255), (60, 200, 60), (255, 160, 0), (200, 80, 200))

NEAR_PLANE_M = 1e-3
_EDGE_TOLERANCE_PX = 1e-4

Color = Tuple[float, float, float]
MeshSpec = Tuple[np.ndarray, np.ndarray, Color]  # (vertices_cam (V,3), faces (F,3), BGR colour)


@dataclass
class Fragments:
    """The visible surface: one entry per covered pixel (each pixel at most once), in row-major order."""
    pixel: np.ndarray          # (P,) int64 flat pixel index, y * width + x
    face: np.ndarray           # (P,) int64 index into the rasterised faces
    inverse_depth: np.ndarray  # (P,) float64 1/z of the surface at the pixel centre (1/m)
    values: Optional[np.ndarray]  # (P, K) the `vertex_values` interpolated at the pixel centre, or None
    width: int

    @property
    def x(self) -> np.ndarray:
        return self.pixel % self.width

    @property
    def y(self) -> np.ndarray:
        return self.pixel // self.width


def _expand(counts: np.ndarray):
    """For counts (N,): the owner of every element of the concatenated ranges, and each owner's first element."""
    owner = np.repeat(np.arange(len(counts)), counts)
    return owner, np.cumsum(counts) - counts


def _covered_spans(a, b, c, row_first, row_last, width):
    """The pixel spans triangles cover: one per (triangle, pixel row) pair with at least one pixel.

    a, b, c: the triangles' barycentric planes (3 arrays (T,) each); row_first/row_last (T,) their rows.
    Returns (triangle, row y, first x, length) per span.
    """
    row_tri, first_row = _expand(row_last - row_first + 1)
    row_y = row_first[row_tri] + (np.arange(len(row_tri)) - first_row[row_tri])
    span_left = np.zeros(len(row_tri))
    span_right = np.full(len(row_tri), width - 1.0)
    for i in range(3):
        # w_i(x) = slope x + r >= 0 on this row: a lower bound on x when slope > 0, an upper one when < 0.
        slope = a[i][row_tri]
        r = b[i][row_tri] * row_y + c[i][row_tri]
        with np.errstate(divide='ignore', invalid='ignore'):
            bound = -r / slope
        span_left = np.where(slope > 0, np.maximum(span_left, bound), span_left)
        span_right = np.where(slope < 0, np.minimum(span_right, bound), span_right)
        span_right = np.where((slope == 0) & (r < 0), -1.0, span_right)
    x_left = np.ceil(span_left - _EDGE_TOLERANCE_PX).astype(np.int64)
    span_length = np.floor(span_right + _EDGE_TOLERANCE_PX).astype(np.int64) - x_left + 1
    spans = np.nonzero(span_length > 0)[0]
    return row_tri[spans], row_y[spans], x_left[spans], span_length[spans]


def rasterize(points_2d: np.ndarray, inverse_depth: np.ndarray, faces: np.ndarray, width: int, height: int,
              vertex_values: Optional[np.ndarray] = None) -> Fragments:
    """Depth-tested coverage of front-facing triangles (see the module docstring for the method).

    points_2d (V,2) pixels; inverse_depth (V,) 1/z in 1/m (a face with a vertex behind the camera, value
    <= 0, or nearer than NEAR_PLANE_M is culled, not clipped); faces (F,3) vertex indices wound
    counter-clockwise seen from the front (in image coordinates, y down, that is a negative signed area);
    vertex_values (V,K): per-vertex attributes to interpolate linearly in screen space (e.g. shading).
    """
    # Per-column arrays throughout: reductions over a length-3 axis cost more than the arithmetic here.
    points_2d = np.asarray(points_2d, dtype=np.float64)
    inverse_depth = np.asarray(inverse_depth, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    xs = [points_2d[faces[:, i], 0] for i in range(3)]
    ys = [points_2d[faces[:, i], 1] for i in range(3)]
    inv_z = [inverse_depth[faces[:, i]] for i in range(3)]
    signed_area = (xs[1] - xs[0]) * (ys[2] - ys[0]) - (ys[1] - ys[0]) * (xs[2] - xs[0])
    row_first = np.ceil(np.minimum(np.minimum(ys[0], ys[1]), ys[2]))
    row_last = np.floor(np.maximum(np.maximum(ys[0], ys[1]), ys[2]))
    keep = (signed_area < 0) & (row_last >= 0) & (row_first <= height - 1)
    keep &= np.maximum(np.maximum(xs[0], xs[1]), xs[2]) >= 0
    keep &= np.minimum(np.minimum(xs[0], xs[1]), xs[2]) <= width - 1
    for w in inv_z:
        keep &= (w > 0) & (w <= 1.0 / NEAR_PLANE_M)
    kept = np.nonzero(keep)[0]
    xs = [x[kept] for x in xs]
    ys = [y[kept] for y in ys]
    inv_z = [w[kept] for w in inv_z]
    inv_area = 1.0 / signed_area[kept]
    # Barycentric weight of vertex i as an affine function of the pixel: w_i = a_i x + b_i y + c_i,
    # from the edge opposite vertex i (edge function divided by the signed area).
    a, b, c = [], [], []
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        a.append((ys[j] - ys[k]) * inv_area)
        b.append((xs[k] - xs[j]) * inv_area)
        c.append(-(a[i] * xs[j] + b[i] * ys[j]))

    def plane(vertex_value):
        """Coefficients (A, B, C) of the affine function v(x, y) through the three corners' values."""
        return (a[0] * vertex_value[0] + a[1] * vertex_value[1] + a[2] * vertex_value[2],
                b[0] * vertex_value[0] + b[1] * vertex_value[1] + b[2] * vertex_value[2],
                c[0] * vertex_value[0] + c[1] * vertex_value[1] + c[2] * vertex_value[2])

    row_tri, row_y, x_left, span_length = _covered_spans(
        a, b, c, np.maximum(row_first[kept], 0).astype(np.int64),
        np.minimum(row_last[kept], height - 1).astype(np.int64), width)
    if len(row_tri) == 0:
        return Fragments(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0),
                         None if vertex_values is None else np.zeros((0, np.shape(vertex_values)[1])), width)

    # Everything per pixel is an affine function along its row: value at the span start + slope * offset,
    # with the offset folded in (start - slope * index of the row's first fragment), so the per-fragment
    # work is gathers and one multiply-add. The depth test runs in the band of image rows the spans touch.
    band_start = row_y.min() * width
    row_pixel = row_y * width + x_left                       # flat index of each span's first pixel

    def along_rows(coefficients):
        """Per-row (start, slope) of an affine plane: its value at x_left and its change per pixel."""
        ca, cb, cc = coefficients
        return cc[row_tri] + ca[row_tri] * x_left + cb[row_tri] * row_y, ca[row_tri]

    frag_row, first_frag = _expand(span_length)
    frag_index = np.arange(len(frag_row))
    frag_pixel = (row_pixel - band_start - first_frag)[frag_row] + frag_index
    # Depth test in one pass: 1/z quantised to 30 bits above the row index, so np.maximum.at keeps the
    # nearest fragment's row (ties below 1e-9 of the frame's 1/z range resolve to the later row).
    inv_z_lo, inv_z_hi = min(w.min() for w in inv_z), max(w.max() for w in inv_z)
    # (a floor on the range keeps rounding noise far below one level, also for a single flat face)
    levels = (1 << 30) / max(inv_z_hi - inv_z_lo, 1e-3 * inv_z_hi)
    depth_start, depth_slope = along_rows(plane(inv_z))
    level_start, level_slope = (depth_start - inv_z_lo) * levels + 2.0, depth_slope * levels
    frag_level = (level_start - level_slope * first_frag)[frag_row] + level_slope[frag_row] * frag_index
    key = (frag_level.astype(np.int64) << 32) | frag_row
    nearest = np.zeros(row_y.max() * width + width - band_start, dtype=np.int64)
    np.maximum.at(nearest, frag_pixel, key)

    covered = np.nonzero(nearest > 0)[0]
    row = nearest[covered] & 0xFFFFFFFF
    pixel = covered + band_start

    def at_pixels(start, slope):
        return (start - slope * row_pixel)[row] + slope[row] * pixel

    values = None
    if vertex_values is not None:
        vertex_values = np.asarray(vertex_values, dtype=np.float64).reshape(len(points_2d), -1)
        values = np.stack([at_pixels(*along_rows(plane([per_vertex[faces[kept, i]] for i in range(3)])))
                           for per_vertex in vertex_values.T], axis=1)
    return Fragments(pixel=pixel, face=kept[row_tri[row]], inverse_depth=at_pixels(depth_start, depth_slope),
                     values=values, width=width)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unnormalised outward normals (F,3) of counter-clockwise faces; length = twice the face area."""
    v0 = vertices[faces[:, 0]]
    e1 = vertices[faces[:, 1]] - v0
    e2 = vertices[faces[:, 2]] - v0
    # Written out: np.cross costs ~10x more than the arithmetic on arrays this small.
    return np.stack([e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1],
                     e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
                     e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]], axis=1)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.sqrt((vectors * vectors).sum(axis=-1, keepdims=True)), 1e-12)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals per vertex: the area-weighted sum of the adjacent faces' outward normals."""
    per_face = face_normals(vertices, faces)
    corner_owner = faces.ravel()
    summed = np.stack([np.bincount(corner_owner, weights=np.repeat(per_face[:, k], 3), minlength=len(vertices))
                       for k in range(3)], axis=1)
    return _unit(summed)


def _headlight(points: np.ndarray, normals: np.ndarray, ambient: float) -> np.ndarray:
    """Lambert intensity in [ambient, 1] for a point light at the camera centre."""
    return ambient + (1.0 - ambient) * np.clip((normals * _unit(-points)).sum(-1), 0.0, 1.0)


def render_meshes(image_bgr: np.ndarray, meshes: Sequence[MeshSpec], intrinsics: CameraIntrinsics,
                  alpha: float = 0.85, shading: str = 'smooth', ambient: float = 0.3) -> np.ndarray:
    """Draw shaded, depth-tested meshes over a copy of `image_bgr` (uint8 HxWx3) and return it.

    meshes: (vertices_cam (V,3) m, faces (F,3) outward-wound, BGR colour 0-255) per mesh; all meshes share
    one z-buffer. alpha: opacity of the meshes (1 = opaque). Pixels no mesh covers are left unchanged.
    """
    if shading not in ('smooth', 'flat'):
        raise ValueError(f"shading must be 'smooth' or 'flat', got {shading!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    image = np.ascontiguousarray(image_bgr)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected a BGR uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}')
    out = image.copy()
    if not meshes:
        return out

    vertices, faces, intensity = [], [], []
    offset = 0
    for verts, tris, _ in meshes:
        verts = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
        tris = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
        if shading == 'smooth':
            intensity.append(_headlight(verts, vertex_normals(verts, tris), ambient))
        else:
            centres = (verts[tris[:, 0]] + verts[tris[:, 1]] + verts[tris[:, 2]]) / 3.0
            intensity.append(_headlight(centres, _unit(face_normals(verts, tris)), ambient))
        vertices.append(verts)
        faces.append(tris + offset)
        offset += len(verts)
    mesh_of_face = np.repeat(np.arange(len(meshes)), [len(f) for f in faces])
    mesh_colors = np.asarray([color for _, _, color in meshes], dtype=np.float32).reshape(-1, 3)
    vertices = np.concatenate(vertices)
    faces = np.concatenate(faces)
    intensity = np.concatenate(intensity)
    height, width = image.shape[:2]
    in_front = vertices[:, 2] > 0
    # Vertices behind the camera get a harmless stand-in projection; their faces are culled by depth.
    points_2d = project_points(np.where(in_front[:, None], vertices, [0.0, 0.0, 1.0]), intrinsics)
    inverse_depth = np.where(in_front, 1.0 / np.where(in_front, vertices[:, 2], 1.0), -1.0)
    smooth = shading == 'smooth'
    frags = rasterize(points_2d, inverse_depth, faces, width, height, intensity[:, None] if smooth else None)
    if len(frags.pixel) == 0:
        return out

    shade = frags.values[:, 0] if smooth else intensity[frags.face]
    color = np.take(mesh_colors, mesh_of_face[frags.face], axis=0) * shade.astype(np.float32)[:, None]
    # np.take / np.put on whole pixels: several times faster than fancy indexing of (N, 3) rows.
    under = np.take(out.reshape(-1, 3), frags.pixel, axis=0).astype(np.float32)
    blended = np.clip(under + alpha * (color - under) + 0.5, 0, 255).astype(np.uint8)
    np.put(out.reshape(-1).view('V3'), frags.pixel, blended.reshape(-1).view('V3'))
    return out


def hand_color(hand: HandResult, color_by: str = 'side') -> Color:
    """BGR colour of a hand: per side, or per track id ('track'; untracked hands fall back to the side)."""
    if color_by == 'track' and hand.detection.track_id >= 0:
        return tuple(float(v) for v in TRACK_COLORS[hand.detection.track_id % len(TRACK_COLORS)])
    if color_by not in ('side', 'track'):
        raise ValueError(f"color_by must be 'side' or 'track', got {color_by!r}")
    return SIDE_COLORS[hand.detection.side]


def hand_meshes(hands: Iterable[HandResult], faces: np.ndarray, color_by: str = 'side',
                closed_wrist: bool = True) -> List[MeshSpec]:
    """Mesh specs (camera-frame vertices, side-correct faces, colour) of the hands that have a mesh.

    faces: MANO's right-hand faces (1538,3) as `HamerModel.faces`; the wrist is closed here when asked and
    the winding is reversed for left hands (docs/model.md §4, §7).
    """

    per_side = faces_by_side(faces, closed_wrist)
    return [(h.reconstruction.vertices_camera, per_side['right' if h.reconstruction.is_right else 'left'], hand_color(h, color_by))
            for h in hands if h.reconstruction is not None]


def rotate_about_vertical(meshes: Sequence[MeshSpec], angle_deg: float = 90.0) -> List[MeshSpec]:
    """The meshes turned together by `angle_deg` about the camera's vertical (y) axis through their centre.

    The centre is the middle of the bounding box of all vertices, so several hands keep their arrangement.
    Positive angles move the far side of the hands to the right in the image.
    """
    if not meshes:
        return []
    all_vertices = np.concatenate([np.asarray(v, dtype=np.float64) for v, _, _ in meshes])
    centre = (all_vertices.min(axis=0) + all_vertices.max(axis=0)) / 2.0
    t = np.radians(angle_deg)
    rotation = np.array([[np.cos(t), 0.0, np.sin(t)], [0.0, 1.0, 0.0], [-np.sin(t), 0.0, np.cos(t)]])
    return [((np.asarray(v, dtype=np.float64) - centre) @ rotation.T + centre, f, c) for v, f, c in meshes]


def draw_skeleton(image_bgr: np.ndarray, keypoints_2d: np.ndarray, joint_color: Color = (255, 255, 255),
                  thickness: Optional[int] = None) -> np.ndarray:
    """Draw 21 OpenPose-order joints and their bones into `image_bgr` in place (and return it).

    Bones are coloured per finger (FINGER_COLORS), joints with `joint_color`. Non-finite points are skipped.
    """
    points = np.asarray(keypoints_2d, dtype=np.float64).reshape(21, 2)
    if thickness is None:
        thickness = max(1, round(min(image_bgr.shape[:2]) / 240))
    finite = np.isfinite(points).all(axis=1)
    # cv2 draws with fixed-point coordinates: 4 fractional bits keep sub-pixel positions.
    fixed = np.round(np.where(finite[:, None], points, 0.0) * 16).astype(np.int64)
    for joint, parent in enumerate(OPENPOSE_PARENTS):
        if parent >= 0 and finite[joint] and finite[parent]:
            color = FINGER_COLORS[(joint - 1) // 4]
            cv2.line(image_bgr, tuple(fixed[parent].tolist()), tuple(fixed[joint].tolist()), color,
                     thickness, cv2.LINE_AA, 4)
    for joint in np.nonzero(finite)[0]:
        cv2.circle(image_bgr, tuple(fixed[joint].tolist()), 16 * (thickness + 1), joint_color, -1, cv2.LINE_AA, 4)
    return image_bgr


def hand_keypoints_2d(hand: HandResult, intrinsics: CameraIntrinsics) -> Optional[np.ndarray]:
    """The best 2D joints known for a hand: HaMeR's, else MediaPipe's image landmarks, else its world ones."""
    if hand.reconstruction is not None:
        return project_points(hand.reconstruction.keypoints_camera, intrinsics)
    if hand.detection.landmarks_2d is not None:
        return np.asarray(hand.detection.landmarks_2d)
    if hand.keypoints_camera_mediapipe is not None:
        return project_points(hand.keypoints_camera_mediapipe, intrinsics)
    return None


def draw_labels(image_bgr: np.ndarray, hands: Iterable[HandResult], color_by: str = 'side') -> np.ndarray:
    """Box and 'right #3 0.97' (side, track id, score) per hand, in place."""
    scale = max(0.4, min(image_bgr.shape[:2]) / 960)
    thickness = max(1, round(scale * 1.5))
    for hand in hands:
        det = hand.detection
        color = hand_color(hand, color_by)
        x0, y0, x1, y1 = np.round(det.box_xyxy).astype(int).tolist()
        cv2.rectangle(image_bgr, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)
        text = det.side + (f' #{det.track_id}' if det.track_id >= 0 else '') + f' {det.score:.2f}'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(y0 - th - base - 2, 0)
        cv2.rectangle(image_bgr, (x0, top), (x0 + tw + 4, top + th + base + 2), color, -1)
        cv2.putText(image_bgr, text, (x0 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return image_bgr


def render_landmarks(image_bgr: np.ndarray, hands: Sequence[HandResult], intrinsics: CameraIntrinsics,
                     color_by: str = 'side', labels: bool = True) -> np.ndarray:
    """Landmarks-only overlay (no HaMeR weights): the 21-joint skeleton of every hand on a copy of the image."""
    out = np.ascontiguousarray(image_bgr).copy()
    for hand in hands:
        keypoints = hand_keypoints_2d(hand, intrinsics)
        if keypoints is not None:
            draw_skeleton(out, keypoints, joint_color=hand_color(hand, color_by))
    if labels:
        draw_labels(out, hands, color_by)
    return out


def render_side_view(meshes: Sequence[MeshSpec], intrinsics: CameraIntrinsics, width: int, height: int,
                     background: Color = (255, 255, 255), shading: str = 'smooth') -> np.ndarray:
    """The meshes turned 90 degrees about the vertical axis, opaque on a plain background (HaMeR demo's side view)."""
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = np.asarray(background, dtype=np.uint8)
    return render_meshes(canvas, rotate_about_vertical(meshes), intrinsics, alpha=1.0, shading=shading)


def render_overlay(image_bgr: np.ndarray, hands: Sequence[HandResult], intrinsics: CameraIntrinsics,
                   faces: Optional[np.ndarray] = None, *, color_by: str = 'side', alpha: float = 0.85,
                   shading: str = 'smooth', closed_wrist: bool = True, draw_joints: bool = False,
                   labels: bool = True, side_view: bool = False) -> np.ndarray:
    """The full overlay of one frame: meshes where HaMeR ran, MediaPipe skeletons where it did not.

    faces: MANO's right-hand faces (`HamerModel.faces`), needed when any hand has a reconstruction.
    draw_joints: also draw the 21 HaMeR joints over the meshes. side_view: return the overlay with the
    side view of the meshes (`render_side_view`) to its right, i.e. an (H, 2W, 3) image.
    """
    with_mesh = [h for h in hands if h.reconstruction is not None]
    if with_mesh and faces is None:
        raise ValueError('render_overlay needs the MANO faces (HamerModel.faces) to draw hand meshes')
    meshes = hand_meshes(with_mesh, faces, color_by, closed_wrist) if with_mesh else []
    out = render_meshes(image_bgr, meshes, intrinsics, alpha=alpha, shading=shading)
    for hand in hands:
        if hand.reconstruction is None or draw_joints:
            keypoints = hand_keypoints_2d(hand, intrinsics)
            if keypoints is not None:
                draw_skeleton(out, keypoints, joint_color=hand_color(hand, color_by))
    if labels:
        draw_labels(out, hands, color_by)
    if side_view:
        height, width = out.shape[:2]
        out = np.concatenate([out, render_side_view(meshes, intrinsics, width, height, shading=shading)], axis=1)
    return out
