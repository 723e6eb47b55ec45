"""Overlay renderer: coverage against independently computed silhouettes, depth order, culling, shading,
colours, side view and the landmarks-only drawing."""
import numpy as np
import pytest

from hamer_ros.io import render
from hamer_ros.types import CameraIntrinsics, HandDetection, HandReconstruction, HandResult

W, H = 160, 120
# Principal point at the middle pixel, so that mirroring x in the camera mirrors the image columns exactly.
K = CameraIntrinsics(fx=150.0, fy=150.0, cx=(W - 1) / 2.0, cy=(H - 1) / 2.0)


def icosphere(subdivisions=2):
    """Unit sphere, faces counter-clockwise seen from outside (checked by the signed volume)."""
    t = (1 + 5 ** 0.5) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
             (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [np.array(v, float) / np.linalg.norm(v) for v in verts]
    for _ in range(subdivisions):
        midpoint_of = {}

        def midpoint(i, j):
            key = (min(i, j), max(i, j))
            if key not in midpoint_of:
                m = verts[i] + verts[j]
                verts.append(m / np.linalg.norm(m))
                midpoint_of[key] = len(verts) - 1
            return midpoint_of[key]
        new_faces = []
        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new_faces
    verts, faces = np.array(verts), np.array(faces, dtype=np.int64)
    assert signed_volume(verts, faces) > 0
    return verts, faces


def signed_volume(verts, faces):
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return np.einsum('ij,ij->i', a, np.cross(b, c)).sum() / 6


def sphere(center, radius, subdivisions=2):
    verts, faces = icosphere(subdivisions)
    return verts * radius + np.asarray(center, float), faces


def pixel_centres():
    v, u = np.mgrid[0:H, 0:W]
    return np.stack([u.ravel(), v.ravel()], axis=1).astype(float)


def inside_convex_polygon(points, polygon):
    """Independent point-in-convex-polygon test (counter-clockwise polygon in image coordinates)."""
    inside = np.ones(len(points), bool)
    for p, q in zip(polygon, np.roll(polygon, -1, axis=0)):
        cross = (q[0] - p[0]) * (points[:, 1] - p[1]) - (q[1] - p[1]) * (points[:, 0] - p[0])
        inside &= cross >= 0
    return inside


def convex_hull(points):
    """Andrew's monotone chain; returns the hull counter-clockwise in a y-up sense (positive cross)."""
    pts = sorted(map(tuple, points))

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out
    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


def project(points):
    return np.stack([K.fx * points[:, 0] / points[:, 2] + K.cx, K.fy * points[:, 1] / points[:, 2] + K.cy], 1)


def changed(before, after):
    return (before != after).any(axis=2)


def background(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- coverage / depth

def test_quad_covers_exactly_the_pixel_centres_inside_its_projection():
    z = 2.0
    # Corners chosen so that no pixel centre lies on an edge: the expected set is unambiguous.
    u0, u1, v0, v1 = 20.3, 97.6, 15.45, 70.8
    corners_px = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
    corners = np.column_stack([(corners_px[:, 0] - K.cx) * z / K.fx, (corners_px[:, 1] - K.cy) * z / K.fy,
                               np.full(4, z)])
    # Facing the camera (normal towards -z) means clockwise in the y-down image: 0,2,1 and 0,3,2.
    faces = np.array([[0, 2, 1], [0, 3, 2]])
    img = background()
    out = render.render_meshes(img, [(corners, faces, (0, 0, 255))], K, alpha=1.0, shading='flat', ambient=0.3)
    u, v = pixel_centres().T
    expected = ((u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)).reshape(H, W)
    np.testing.assert_array_equal(changed(img, out), expected)
    assert (out[expected][:, :2] == 0).all()
    # Flat headlight shading: ambient + (1 - ambient) cos(normal, direction to the camera) at the centroid.
    for face, probe in zip(faces, ((90, 20), (25, 65))):       # a pixel inside each triangle (u, v)
        centroid = corners[face].mean(0)
        cos = centroid[2] / np.linalg.norm(centroid)              # normal is -z, light at the origin
        assert abs(int(out[probe[1], probe[0], 2]) - 255 * (0.3 + 0.7 * cos)) <= 1


def test_sphere_covers_the_convex_hull_of_its_projected_vertices():
    verts, faces = sphere((0.05, -0.02, 1.0), 0.25)
    img = background(1)
    out = render.render_meshes(img, [(verts, faces, (200, 200, 200))], K, alpha=1.0)
    hull = convex_hull(project(verts))
    expected = inside_convex_polygon(pixel_centres(), hull).reshape(H, W)
    mask = changed(img, out)
    # Pixel centres within 1e-4 px of the outline may go either way; there are none or a handful.
    assert (mask != expected).sum() <= 2
    assert expected.sum() > 2000


def test_rasterize_matches_brute_force_depth_test():
    rng = np.random.default_rng(3)
    w, h = 40, 30
    points = rng.uniform([-5, -5], [w + 5, h + 5], size=(60, 2))
    inverse_depth = rng.uniform(0.2, 2.0, size=60)
    faces = rng.integers(0, 60, size=(40, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    vertex_values = rng.normal(size=(60, 2))
    frags = render.rasterize(points, inverse_depth, faces, w, h, vertex_values)

    # Brute force: every pixel centre against every triangle, with its own barycentric solve.
    v, u = np.mgrid[0:h, 0:w]
    centres = np.stack([u.ravel(), v.ravel()], 1).astype(float)
    best_face = np.full(len(centres), -1)
    best_depth = np.zeros(len(centres))
    best_values = np.zeros((len(centres), 2))
    near_an_edge = np.zeros(len(centres), bool)
    for f, (i, j, k) in enumerate(faces):
        a, b, c = points[i], points[j], points[k]
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if area >= 0:   # back-facing or degenerate
            continue
        m = np.array([[a[0], b[0], c[0]], [a[1], b[1], c[1]], [1, 1, 1]])
        bary = np.linalg.solve(m, np.vstack([centres.T, np.ones(len(centres))])).T
        # distance of each centre to each edge line, in pixels: |weight| * |2 area| / edge length
        lengths = np.linalg.norm(np.array([c - b, a - c, b - a]), axis=1)
        distance = np.abs(bary) * abs(area) / lengths
        near_an_edge |= (distance < 1e-3).any(1) & (bary >= -1e-3).all(1)
        inside = (bary >= 0).all(1)
        depth = bary @ inverse_depth[[i, j, k]]
        better = inside & (depth > best_depth)
        best_face[better] = f
        best_depth[better] = depth[better]
        best_values[better] = bary[better] @ vertex_values[[i, j, k]]
    got = np.full(len(centres), -1)
    got[frags.y * w + frags.x] = frags.face
    assert (got >= 0).sum() > 300
    # Centres within 1e-3 px of an edge may go either way (the rasteriser includes edges within 1e-4 px).
    mismatch = (got != best_face) & ~near_an_edge
    assert mismatch.sum() == 0, np.nonzero(mismatch)
    assert near_an_edge.sum() <= 3
    pixel = frags.y * w + frags.x
    agree = (got == best_face)[pixel]
    assert agree.mean() > 0.99
    np.testing.assert_allclose(frags.inverse_depth[agree], best_depth[pixel[agree]], rtol=1e-9)
    np.testing.assert_allclose(frags.values[agree], best_values[pixel[agree]], atol=1e-9)
    np.testing.assert_array_equal(frags.pixel, np.sort(frags.pixel))          # row-major, each pixel once
    assert len(np.unique(frags.pixel)) == len(frags.pixel)


def test_nearer_mesh_occludes_farther_one_whatever_the_order():
    near = sphere((-0.03, 0.0, 0.8), 0.12)
    far = sphere((0.06, 0.0, 1.0), 0.2)
    img = np.zeros((H, W, 3), np.uint8)
    red, blue = (0, 0, 255), (255, 0, 0)
    a = render.render_meshes(img, [(*near, red), (*far, blue)], K, alpha=1.0)
    b = render.render_meshes(img, [(*far, blue), (*near, red)], K, alpha=1.0)
    np.testing.assert_array_equal(a, b)
    near_only = changed(img, render.render_meshes(img, [(*near, red)], K, alpha=1.0))
    far_only = changed(img, render.render_meshes(img, [(*far, blue)], K, alpha=1.0))
    overlap = near_only & far_only
    assert overlap.sum() > 200
    assert (a[overlap][:, 0] == 0).all() and (a[overlap][:, 2] > 0).all()     # red wins where both are
    assert (a[far_only & ~near_only][:, 2] == 0).all()


def test_depth_order_within_one_mesh():
    # Two spheres in a single mesh: the z-buffer, not the face order, decides.
    v1, f1 = sphere((-0.03, 0.0, 0.8), 0.12)
    v2, f2 = sphere((0.06, 0.0, 1.0), 0.2)
    for verts, faces in (((v1, v2), (f1, f2 + len(v1))), ((v2, v1), (f2, f1 + len(v2)))):
        verts, faces = np.concatenate(verts), np.concatenate(faces)
        frags = render.rasterize(project(verts), 1 / verts[:, 2], faces, W, H)
        centre = (frags.x == round(project(np.array([[-0.03, 0.0, 0.8]]))[0, 0])) & (frags.y == round(K.cy))
        # The surface seen at the near sphere's centre is the near sphere's front: z = 0.8 - 0.12.
        np.testing.assert_allclose(1 / frags.inverse_depth[centre], 0.68, atol=2e-3)


def test_back_faces_are_culled():
    z = 1.0
    tri = np.array([[-0.1, -0.1, z], [0.1, -0.1, z], [0.0, 0.1, z]])
    img = background(2)
    facing_camera = render.render_meshes(img, [(tri, np.array([[0, 2, 1]]), (0, 255, 0))], K)
    facing_away = render.render_meshes(img, [(tri, np.array([[0, 1, 2]]), (0, 255, 0))], K)
    assert changed(img, facing_camera).sum() > 100
    np.testing.assert_array_equal(facing_away, img)
    # A closed sphere shows its near half: the depth at its centre is that of the front surface.
    verts, faces = sphere((0.0, 0.0, 1.0), 0.2)
    frags = render.rasterize(project(verts), 1 / verts[:, 2], faces, W, H)
    centre = (frags.x == round(K.cx)) & (frags.y == round(K.cy))
    np.testing.assert_allclose(1 / frags.inverse_depth[centre], 0.8, atol=2e-3)


def test_image_outside_the_meshes_is_unchanged_and_input_untouched():
    img = background(4)
    keep = img.copy()
    verts, faces = sphere((0.0, 0.0, 1.0), 0.2)
    out = render.render_meshes(img, [(verts, faces, (10, 20, 30))], K, alpha=0.5)
    np.testing.assert_array_equal(img, keep)
    mask = changed(img, out)
    hull = convex_hull(project(verts))
    expected = inside_convex_polygon(pixel_centres(), hull).reshape(H, W)
    assert not (mask & ~expected).any()
    np.testing.assert_array_equal(out[~expected], img[~expected])


def test_meshes_partly_off_screen_or_behind_the_camera():
    verts, faces = sphere((0.0, 0.0, 0.1), 0.3)    # straddles the camera plane
    img = background(5)
    out = render.render_meshes(img, [(verts, faces, (0, 255, 0))], K)
    # Only faces wholly in front of the near plane are drawn; nothing fails.
    assert out.shape == img.shape
    edge_verts, edge_faces = sphere((0.55, 0.0, 1.0), 0.2)   # cut by the right image border
    out = render.render_meshes(img, [(edge_verts, edge_faces, (0, 255, 0))], K, alpha=1.0)
    mask = changed(img, out)
    assert mask[:, -1].sum() > 10 and not mask[:, :60].any()


# ----------------------------------------------------------------------------------------- shading / blending

def test_headlight_shading_brightest_facing_the_camera():
    verts, faces = sphere((0.0, 0.0, 1.0), 0.3, subdivisions=3)
    img = np.zeros((H, W, 3), np.uint8)
    color = (200.0, 100.0, 50.0)
    for shading in ('smooth', 'flat'):
        out = render.render_meshes(img, [(verts, faces, color)], K, alpha=1.0, shading=shading, ambient=0.3)
        centre = out[round(K.cy), round(K.cx)].astype(float)
        np.testing.assert_allclose(centre, color, atol=3)
        mask = changed(img, out)
        cols = np.nonzero(mask[round(K.cy)])[0]
        rim = out[round(K.cy), cols.min()].astype(float)
        assert rim[0] < 0.7 * color[0]                    # grazing light at the silhouette
        assert rim[0] >= 0.3 * color[0] - 1                 # never below the ambient term


def test_alpha_blends_with_the_image():
    verts, faces = sphere((0.0, 0.0, 1.0), 0.3)
    img = np.full((H, W, 3), 40, np.uint8)
    opaque = render.render_meshes(img, [(verts, faces, (250, 250, 250))], K, alpha=1.0).astype(float)
    half = render.render_meshes(img, [(verts, faces, (250, 250, 250))], K, alpha=0.5).astype(float)
    mask = changed(img, opaque.astype(np.uint8))
    np.testing.assert_allclose(half[mask], (opaque[mask] + 40) / 2, atol=1.0)


def test_bad_input_is_refused_with_a_message():
    verts, faces = sphere((0.0, 0.0, 1.0), 0.3)
    with pytest.raises(ValueError, match='BGR uint8'):
        render.render_meshes(np.zeros((H, W), np.uint8), [(verts, faces, (1, 2, 3))], K)
    with pytest.raises(ValueError, match='shading'):
        render.render_meshes(np.zeros((H, W, 3), np.uint8), [(verts, faces, (1, 2, 3))], K, shading='phong')


# --------------------------------------------------------------------------------------------- hand overlays

def make_hand(vertices_hand, cam_t, side, track_id=-1, faces_keypoints=None):
    keypoints = vertices_hand[:21] if faces_keypoints is None else faces_keypoints
    is_right = side == 'right'
    camera_points = vertices_hand + cam_t
    uv = project(camera_points)
    box = np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])
    recon = HandReconstruction(
        is_right=is_right, pred_cam=np.zeros(3), global_orient=np.eye(3), hand_pose=np.tile(np.eye(3), (15, 1, 1)),
        betas=np.zeros(10), vertices=vertices_hand, keypoints_3d=keypoints, cam_t=np.asarray(cam_t, float),
        keypoints_2d=project(keypoints + cam_t), joint_rotations=np.tile(np.eye(3), (16, 1, 1)),
        box_center=(box[:2] + box[2:]) / 2, box_size=float(max(box[2:] - box[:2])), focal_length=np.array([K.fx, K.fy]))
    return HandResult(HandDetection(box, side, track_id=track_id), recon)


@pytest.fixture(scope='module')
def mano(mano_only_data_dir):
    from hamer_ros.hamer.mano import load_mano_pkl
    return load_mano_pkl(mano_only_data_dir / 'data' / 'mano' / 'MANO_RIGHT.pkl')


def test_left_hand_renders_as_the_mirror_image_of_the_right_one(mano):
    # HaMeR's left hands are right-hand meshes with x negated (docs/model.md §7); with the winding reversed they must
    # show the same surface, mirrored: same coverage and same shading, column for column.
    verts = mano.v_template.astype(np.float64) - mano.v_template.mean(0)
    right = make_hand(verts, [0.0, 0.0, 0.5], 'right', track_id=1)
    left = make_hand(verts * [-1, 1, 1], [0.0, 0.0, 0.5], 'left', track_id=1)
    img = np.zeros((H, W, 3), np.uint8)
    options = dict(color_by='track', labels=False, alpha=1.0)
    out_right = render.render_overlay(img, [right], K, mano.faces, **options)
    out_left = render.render_overlay(img, [left], K, mano.faces, **options)
    mirrored = out_left[:, ::-1]
    mask_r, mask_l = changed(img, out_right), changed(img, mirrored)
    assert mask_r.sum() > 500
    assert (mask_r != mask_l).sum() <= 3
    both = mask_r & mask_l
    assert np.abs(out_right[both].astype(int) - mirrored[both].astype(int)).max() <= 2
    # Without the reversal the left hand would show the other side of the surface: not the mirror image.
    from hamer_ros.hamer.mano import closed_faces
    wrong = render.render_meshes(img, [(left.reconstruction.vertices_camera, closed_faces(mano.faces),
                                        render.TRACK_COLORS[1])], K, alpha=1.0)[:, ::-1]
    assert np.abs(wrong[both].astype(int) - out_right[both].astype(int)).mean() > 5


def test_left_and_right_hands_get_their_side_colours(mano):
    verts = mano.v_template.astype(np.float64) - mano.v_template.mean(0)
    right = make_hand(verts, [-0.1, 0.0, 0.6], 'right')
    left = make_hand(verts * [-1, 1, 1], [0.1, 0.0, 0.6], 'left')
    img = np.zeros((H, W, 3), np.uint8)
    out = render.render_overlay(img, [right, left], K, mano.faces, labels=False, alpha=1.0)
    mask = changed(img, out)
    for side, columns in (('right', slice(0, W // 2)), ('left', slice(W // 2, W))):
        pixels = out[:, columns][mask[:, columns]].astype(float)
        assert len(pixels) > 200
        # Every shaded pixel is the side's colour times an intensity: same hue (BGR ratios).
        base = np.array(render.SIDE_COLORS[side])
        ratios = pixels / pixels.max(axis=1, keepdims=True)
        np.testing.assert_allclose(ratios, np.broadcast_to(base / base.max(), ratios.shape), atol=0.04)


def test_overlay_draws_mesh_hands_and_skeletons_for_landmark_only_hands(mano):
    verts = mano.v_template.astype(np.float64) - mano.v_template.mean(0)
    meshed = make_hand(verts, [-0.1, 0.0, 0.6], 'right')
    landmarks = np.column_stack([np.linspace(110, 150, 21), np.linspace(20, 100, 21)])
    skeleton_only = HandResult(HandDetection([105, 15, 155, 105], 'left', landmarks_2d=landmarks))
    img = np.zeros((H, W, 3), np.uint8)
    out = render.render_overlay(img, [meshed, skeleton_only], K, mano.faces, labels=False)
    with_mesh_only = render.render_overlay(img, [meshed], K, mano.faces, labels=False)
    right_half = slice(W // 2 + 20, W)
    assert not changed(img, with_mesh_only)[:, right_half].any()
    assert changed(img, out)[:, right_half].sum() > 50
    with pytest.raises(ValueError, match='faces'):
        render.render_overlay(img, [meshed], K, None)


def test_side_view_turns_the_meshes_about_the_vertical_axis():
    # A rod along the optical axis: a dot from the front, a horizontal bar from the side.
    verts, faces = sphere((0.0, 0.0, 0.0), 1.0)
    verts = verts * [0.02, 0.02, 0.3] + [0.0, 0.0, 1.5]
    img = np.zeros((H, W, 3), np.uint8)
    front = changed(img, render.render_meshes(img, [(verts, faces, (255, 255, 255))], K, alpha=1.0))
    side = render.render_side_view([(verts, faces, (255, 255, 255))], K, W, H, background=(0, 0, 0))
    side_mask = side.any(axis=2)
    cols, rows = np.nonzero(side_mask.any(axis=0))[0], np.nonzero(side_mask.any(axis=1))[0]
    front_cols = np.nonzero(front.any(axis=0))[0]
    assert len(cols) > 4 * len(front_cols)
    assert len(cols) > 4 * len(rows)
    # About the rod's own centre: it stays centred in the image.
    assert abs((cols.min() + cols.max()) / 2 - K.cx) <= 1.5


def test_overlay_with_side_view_is_twice_as_wide(mano):
    verts = mano.v_template.astype(np.float64) - mano.v_template.mean(0)
    hand = make_hand(verts, [0.0, 0.0, 0.6], 'right')
    img = background(6)
    plain = render.render_overlay(img, [hand], K, mano.faces)
    wide = render.render_overlay(img, [hand], K, mano.faces, side_view=True)
    assert wide.shape == (H, 2 * W, 3)
    np.testing.assert_array_equal(wide[:, :W], plain)
    side = wide[:, W:]
    assert (side != 255).any(axis=2).sum() > 100           # the hand (seen along its length), on white


# ----------------------------------------------------------------------------------------------- landmarks

def test_landmarks_skeleton_follows_the_bones():
    landmarks = np.zeros((21, 2))
    landmarks[0] = (80, 100)
    for finger in range(5):
        for j in range(4):
            landmarks[1 + 4 * finger + j] = (40 + 20 * finger, 80 - 15 * j)
    hand = HandResult(HandDetection([30, 20, 130, 110], 'right', landmarks_2d=landmarks))
    img = np.zeros((H, W, 3), np.uint8)
    out = render.render_landmarks(img, [hand], K, labels=False)
    for joint, parent in enumerate(render.OPENPOSE_PARENTS):
        if parent < 0:
            continue
        middle = np.round((landmarks[joint] + landmarks[parent]) / 2).astype(int)
        if joint % 4 != 1:      # segments between finger joints: away from the joint dots
            # anti-aliased: the finger's colour, possibly a little dimmer
            pixel = out[middle[1], middle[0]].astype(float)
            color = np.array(render.FINGER_COLORS[(joint - 1) // 4], float)
            np.testing.assert_allclose(pixel / pixel.max(), color / color.max(), atol=0.03)
            assert pixel.max() > 0.7 * color.max()
    for point in landmarks.astype(int):
        np.testing.assert_array_equal(out[point[1], point[0]], render.SIDE_COLORS['right'])
    # Nothing far from the skeleton changes.
    assert not changed(img, out)[:, 135:].any() and not changed(img, out)[:10].any()


def test_landmarks_from_mediapipe_world_points_are_projected():
    points = np.column_stack([np.linspace(-0.05, 0.05, 21), np.linspace(-0.03, 0.03, 21), np.full(21, 0.5)])
    hand = HandResult(HandDetection([0, 0, 10, 10], 'left'), keypoints_camera_mediapipe=points)
    np.testing.assert_allclose(render.hand_keypoints_2d(hand, K), project(points))
    out = render.render_landmarks(np.zeros((H, W, 3), np.uint8), [hand], K, labels=False)
    u, v = np.round(project(points)[10]).astype(int)
    np.testing.assert_array_equal(out[v, u], render.SIDE_COLORS['left'])


def test_labels_name_side_and_track():
    hand = HandResult(HandDetection([20, 40, 80, 100], 'right', score=0.9, track_id=3))
    img = np.zeros((H, W, 3), np.uint8)
    out = render.render_landmarks(img, [hand], K, labels=True)
    mask = changed(img, out)
    assert mask[40, 20:80].all()                # the box's top edge
    assert mask[:40, 20:60].any()               # the label above it
    assert not mask[50:90, 30:70].any()         # inside the box untouched


def test_track_colours_and_side_fallback():
    tracked = HandResult(HandDetection([0, 0, 1, 1], 'left', track_id=2))
    untracked = HandResult(HandDetection([0, 0, 1, 1], 'left'))
    assert render.hand_color(tracked, 'track') == tuple(float(v) for v in render.TRACK_COLORS[2])
    assert render.hand_color(untracked, 'track') == render.SIDE_COLORS['left']
    assert render.hand_color(tracked, 'side') == render.SIDE_COLORS['left']
    with pytest.raises(ValueError):
        render.hand_color(tracked, 'rainbow')


def test_openpose_parents_match_the_mano_module():
    from hamer_ros.hamer.mano import OPENPOSE_PARENTS
    assert render.OPENPOSE_PARENTS == tuple(OPENPOSE_PARENTS)


# ---------------------------------------------------------------------------------------- view-mano command

def test_upright_view_puts_the_wrist_down_and_the_thumb_right(mano):
    from hamer_ros.cli.mano_to_obj import template_hand
    from hamer_ros.cli.view_mano import upright_view
    _, keypoints = template_hand(mano, [])
    for view, thumb_sign in (('palm', 1), ('back', -1)):
        rotation = upright_view(keypoints.copy(), view)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        cam = keypoints @ rotation.T
        assert cam[9, 1] < cam[0, 1]                                   # middle MCP above the wrist (y down)
        assert abs(cam[9, 0] - cam[0, 0]) < 1e-9                       # straight up
        assert thumb_sign * (cam[2, 0] - cam[9, 0]) > 0                # thumb side right (palm) / left (back)


def test_view_mano_writes_a_labelled_png(tmp_path, mano_only_data_dir):
    import cv2
    from test_mesh_io import run_command
    palm, back = tmp_path / 'palm.png', tmp_path / 'back.png'
    assert run_command('view-mano', ['--data-dir', mano_only_data_dir, '--out', palm, '--size', 400]) == 0
    run_command('view-mano', ['--data-dir', mano_only_data_dir, '--out', back, '--size', 400, '--view', 'back'])
    images = [cv2.imread(str(p)) for p in (palm, back)]
    from hamer_ros.cli.view_mano import _LEGEND_WIDTH
    assert images[0].shape == (400, 400 + _LEGEND_WIDTH, 3)
    # The hand: the right-hand colour blended over the light grey background.
    masks = [(np.abs(img[:, :400].astype(int) - 245).sum(axis=2) > 30) for img in images]
    assert masks[0].sum() > 0.15 * 400 * 400
    # The skeleton: thumb bones (orange) right of the middle finger's (green) seen from the palm, left from the back.
    def mean_column(img, color):
        columns = np.nonzero((np.abs(img[:, :400].astype(int) - color).sum(axis=2) < 40))[1]
        assert len(columns) > 20
        return columns.mean()
    thumb, middle = render.FINGER_COLORS[0], render.FINGER_COLORS[2]
    assert mean_column(images[0], thumb) > mean_column(images[0], middle) + 20
    assert mean_column(images[1], thumb) < mean_column(images[1], middle) - 20
    # The legend names 21 joints: 21 text lines below the title.
    legend_rows = (images[0][:, 400:] < 200).any(axis=(1, 2))
    runs = np.count_nonzero(np.diff(legend_rows.astype(int)) == 1)
    assert runs >= 22


def test_view_mano_refuses_a_tiny_image(tmp_path, mano_only_data_dir):
    from test_mesh_io import run_command
    with pytest.raises(ValueError, match='too small'):
        run_command('view-mano', ['--data-dir', mano_only_data_dir, '--out', tmp_path / 'x.png', '--size', 50])
