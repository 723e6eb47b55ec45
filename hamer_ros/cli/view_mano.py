"""`python -m hamer_ros view-mano`: a PNG of the MANO template hand with its 21 joints drawn and labelled.

The hand is shown upright (wrist at the bottom, middle finger up) seen from the palm (thumb to the right for a
right hand) or from the back, rendered by `hamer_ros.io.render`; joint numbers sit next to the joints and a
legend beside the image names them (OpenPose order, docs/model.md §4). MANO sources as for mano-to-obj.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hamer_ros.cli.mano_to_obj import add_mano_source_arguments
from hamer_ros.errors import InputError

_LEGEND_WIDTH = 220


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_mano_source_arguments(parser)
    parser.add_argument('--out', type=Path, required=True, help='output .png file')
    parser.add_argument('--view', choices=('palm', 'back'), default='palm', help='side of the hand to show')
    parser.add_argument('--size', type=int, default=800, help='height of the image and width of the hand view, '
                        'pixels (a legend %d px wide is added)' % _LEGEND_WIDTH)


def upright_view(keypoints, view: str = 'palm'):
    """Rotation (3,3) taking hand coordinates to camera axes: wrist -> middle MCP points up the image and, seen
    from the palm, the thumb side is to the right (a right hand's palm faces you only that way round)."""
    import numpy as np

    up = keypoints[9] - keypoints[0]            # wrist -> middle_mcp
    up /= np.linalg.norm(up)
    thumb = keypoints[2] - keypoints[9]         # towards thumb_mcp, made perpendicular to `up`
    thumb -= (thumb @ up) * up
    thumb /= np.linalg.norm(thumb)
    right = thumb if view == 'palm' else -thumb
    down = -up
    return np.stack([right, down, np.cross(right, down)])   # rows: camera x, y, z in hand coordinates


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from hamer_ros.io import render
    from hamer_ros.cli.mano_to_obj import load_mano_from_args, template_hand
    from hamer_ros.hamer.camera import project_points
    from hamer_ros.hamer.mano import OPENPOSE_JOINT_NAMES, closed_faces
    from hamer_ros.types import CameraIntrinsics

    if args.size < 100:
        raise InputError(f'--size {args.size} is too small to label 21 joints: use 100 or more')
    mano = load_mano_from_args(args)
    vertices, keypoints = template_hand(mano, args.betas)
    rotation = upright_view(keypoints, args.view)
    centre = (vertices.min(0) + vertices.max(0)) / 2
    distance = 1.0   # m; the focal length below makes the hand fill the view
    vertices_cam = (vertices - centre) @ rotation.T + [0.0, 0.0, distance]
    keypoints_cam = (keypoints - centre) @ rotation.T + [0.0, 0.0, distance]
    size = args.size
    extent = np.abs(vertices_cam[:, :2] / vertices_cam[:, 2:]).max()
    focal = 0.42 * size / extent
    intrinsics = CameraIntrinsics(focal, focal, (size - 1) / 2, (size - 1) / 2, from_camera_info=False)

    canvas = np.full((size, size, 3), 245, np.uint8)
    image = render.render_meshes(canvas, [(vertices_cam, closed_faces(mano.faces), render.SIDE_COLORS['right'])],
                                 intrinsics, alpha=0.75)
    joints_2d = project_points(keypoints_cam, intrinsics)
    render.draw_skeleton(image, joints_2d, joint_color=(40, 40, 40), thickness=max(1, size // 300))
    scale = size / 1600
    for index, (u, v) in enumerate(joints_2d):
        origin = (int(round(u)) + 6, int(round(v)) - 6)
        cv2.putText(image, str(index), origin, cv2.FONT_HERSHEY_SIMPLEX, scale * 1.6, (255, 255, 255), 4, cv2.LINE_AA)
        cv2.putText(image, str(index), origin, cv2.FONT_HERSHEY_SIMPLEX, scale * 1.6, (20, 20, 20), 1, cv2.LINE_AA)

    legend = np.full((size, _LEGEND_WIDTH, 3), 255, np.uint8)
    line_height = size // 24
    title = f'MANO ({args.view})'
    cv2.putText(legend, title, (10, line_height), cv2.FONT_HERSHEY_SIMPLEX, scale * 1.6, (0, 0, 0), 1, cv2.LINE_AA)
    for index, name in enumerate(OPENPOSE_JOINT_NAMES):
        finger_color = (40, 40, 40) if index == 0 else render.FINGER_COLORS[(index - 1) // 4]
        cv2.putText(legend, f'{index:2d} {name}', (10, (index + 2) * line_height), cv2.FONT_HERSHEY_SIMPLEX,
                    scale * 1.4, finger_color, 1, cv2.LINE_AA)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.concatenate([image, legend], axis=1)):
        raise InputError(f'cannot write {out}: use a .png path in a writable folder')
    print(f'wrote {out}: MANO template ({args.view} view) with 21 labelled joints; MANO from {mano.source}')
    return 0
