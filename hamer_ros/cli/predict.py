"""`python -m hamer_ros predict`: HaMeR on given boxes of one image, raw outputs to an .npz.

For N boxes, in the order given, the .npz holds: ``crops`` (N,3,256,256) network inputs, ``pred_cam`` (N,3) raw,
``betas`` (N,10), ``global_orient`` (N,3,3) and ``hand_pose`` (N,15,3,3) in the image frame, ``vertices``
(N,778,3) and ``keypoints_3d`` (N,21,3) hand-centred in camera axes (left hands mirrored back), ``cam_t`` (N,3)
(camera-frame points = vertices + cam_t), ``keypoints_2d`` (N,21,2) pixels, ``focal_length`` (N,2) fx, fy,
``box_center`` (N,2), ``box_size`` (N,).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hamer_ros.errors import InputError, MissingFileError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hamer_ros.cli.infer import add_device_arguments, add_image_size_argument

    parser.add_argument('--data-dir', type=Path, help='folder laid out like the official _DATA '
                        '(default: HAMER_ROS_DATA_DIR or ~/.local/share/hamer_ros/_DATA)')
    parser.add_argument('--checkpoint', type=Path, help='hamer.ckpt, instead of the one in --data-dir')
    parser.add_argument('--mano', type=Path, help='MANO_RIGHT.pkl or its folder (only needed when the checkpoint '
                        'has no MANO buffers)')
    parser.add_argument('--image', type=Path, required=True, help='image file (anything cv2.imread reads)')
    parser.add_argument('--box', type=float, nargs=4, action='append', required=True, metavar=('X1', 'Y1', 'X2', 'Y2'),
                        help='tight hand box in pixels; repeat for more hands')
    parser.add_argument('--side', choices=('left', 'right'), action='append', required=True,
                        help="the subject's hand for the box of the same position; one per --box")
    parser.add_argument('--intrinsics', type=float, nargs=4, metavar=('FX', 'FY', 'CX', 'CY'),
                        help="camera intrinsics in pixels (default: HaMeR's camera, focal 5000/256*max(W,H))")
    parser.add_argument('--out', type=Path, required=True, help='output .npz')
    add_image_size_argument(parser)
    add_device_arguments(parser)
    parser.add_argument('--threads', type=int, help='CPU threads for PyTorch (default: its own choice)')


def run(args: argparse.Namespace) -> int:
    if len(args.box) != len(args.side):
        raise InputError(f'{len(args.box)} --box but {len(args.side)} --side: give one --side per --box, in order')
    import numpy as np

    from hamer_ros.hamer.model import HamerModel
    from hamer_ros.io.offline import read_image
    from hamer_ros.types import CameraIntrinsics, HandDetection

    if not args.image.is_file():
        raise MissingFileError(f'cannot read image {args.image}: it does not exist, check the path')
    image, error = read_image(args.image, args.max_image_pixels)
    if image is None:
        raise InputError(f'{error}: give a PNG/JPEG/... file')
    detections = [HandDetection(np.array(box), side) for box, side in zip(args.box, args.side)]
    intrinsics = CameraIntrinsics(*args.intrinsics) if args.intrinsics else None
    model = HamerModel.load(args.data_dir, args.checkpoint, args.mano, device=args.device,
                            precision=args.precision, threads=args.threads,
                            allow_cpu_fallback=args.allow_cpu_fallback)
    result = model.predict_batch(image, detections, intrinsics)

    def stacked(name):
        return np.stack([getattr(hand, name) for hand in result.hands])

    arrays = {'crops': result.crops, 'pred_cam': stacked('pred_cam'), 'betas': stacked('betas'),
              'global_orient': stacked('global_orient'), 'hand_pose': stacked('hand_pose'),
              'vertices': stacked('vertices'), 'keypoints_3d': stacked('keypoints_3d'), 'cam_t': stacked('cam_t'),
              'keypoints_2d': stacked('keypoints_2d'), 'focal_length': stacked('focal_length'),
              'box_center': stacked('box_center'), 'box_size': np.array([h.box_size for h in result.hands],
                                                                          dtype=np.float32)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, 'wb') as f:   # a file object: np.savez would append '.npz' to other suffixes
        np.savez(f, **arrays)
    print(f'{model.describe()}\nwrote {len(detections)} hand(s) to {args.out}')
    return 0
