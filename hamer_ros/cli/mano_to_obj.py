"""`python -m hamer_ros mano-to-obj`: the MANO template hand (optionally reshaped by betas) as an OBJ file.

MANO comes from, in this order: --mano (MANO_RIGHT.pkl), --checkpoint (its ``mano.*`` buffers), or the data
folder (--data-dir, default `hamer_ros.provisioning.paths.data_dir()`): its checkpoint's buffers when it carries them
—
they are what HaMeR itself uses (docs/model.md §1.1) — else its data/mano/MANO_RIGHT.pkl.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hamer_ros.errors import InputError, MissingFileError, file_errors_are_user_errors


def add_mano_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--mano / --checkpoint / --data-dir and --betas, shared with view-mano."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--mano', type=Path, help='MANO_RIGHT.pkl (or the folder holding it)')
    source.add_argument('--checkpoint', type=Path, help='hamer.ckpt whose mano.* buffers to use')
    source.add_argument('--data-dir', type=Path, help='folder laid out like the official _DATA '
                        '(default: HAMER_ROS_DATA_DIR or ~/.local/share/hamer_ros/_DATA)')
    parser.add_argument('--betas', type=float, nargs='+', default=[], metavar='B',
                        help='up to 10 MANO shape coefficients (the rest are 0; default: the mean shape)')


def load_mano_from_args(args: argparse.Namespace):
    """The MANO model the flags name (see `_load_mano`); an unusable file is a one-line user error."""
    with file_errors_are_user_errors():
        return _load_mano(args)


def _load_mano(args: argparse.Namespace):
    """The ManoData the source arguments name; FileNotFoundError saying what to do when there is none."""
    from hamer_ros.provisioning import paths
    from hamer_ros.hamer import checkpoint as ckpt_io
    from hamer_ros.hamer import mano as mano_lib

    if args.mano is not None:
        return mano_lib.load_mano_pkl(args.mano)
    if args.checkpoint is not None:
        return _mano_of_checkpoint(args.checkpoint, required=True)
    data_dir = args.data_dir.expanduser() if args.data_dir is not None else paths.data_dir()
    checkpoint = data_dir / ckpt_io.CHECKPOINT_IN_DATA_DIR
    mano = _mano_of_checkpoint(checkpoint, required=False) if checkpoint.is_file() else None
    if mano is not None:
        return mano
    pkl = data_dir / ckpt_io.MANO_IN_DATA_DIR
    if pkl.is_file():
        return mano_lib.load_mano_pkl(pkl)
    raise MissingFileError(f'no MANO model in {data_dir}: neither {ckpt_io.CHECKPOINT_IN_DATA_DIR} with mano.* '
                           f'buffers nor {ckpt_io.MANO_IN_DATA_DIR}; install the HaMeR data there '
                           '(python -m hamer_ros setup-weights) or pass --mano / --checkpoint / --data-dir')


def _mano_of_checkpoint(path: Path, required: bool):
    from hamer_ros.hamer import checkpoint as ckpt_io
    from hamer_ros.hamer import mano as mano_lib

    mano = mano_lib.mano_from_state_dict(ckpt_io.read_checkpoint(path).state_dict, source=str(path))
    if mano is None and required:
        raise MissingFileError(f'{path} carries no mano.* buffers: pass MANO_RIGHT.pkl with --mano instead')
    return mano


def template_hand(mano, betas):
    """Vertices (778,3) and OpenPose keypoints (21,3) of the MANO hand in its rest pose with `betas`."""
    import numpy as np
    import torch

    from hamer_ros.hamer.mano import NUM_BETAS, NUM_JOINTS, ManoLayer

    if len(betas) > NUM_BETAS:
        raise InputError(f'--betas takes at most {NUM_BETAS} values, got {len(betas)}')
    shape = torch.zeros(1, NUM_BETAS)
    shape[0, :len(betas)] = torch.tensor(betas, dtype=torch.float32)
    rest = torch.eye(3).expand(1, NUM_JOINTS, 3, 3)
    with torch.no_grad():
        out = ManoLayer(mano)(rest[:, 0], rest[:, 1:], shape)
    return out['vertices'][0].numpy().astype(np.float64), out['keypoints_3d'][0].numpy().astype(np.float64)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_mano_source_arguments(parser)
    parser.add_argument('--out', type=Path, required=True, help='output .obj file')
    parser.add_argument('--closed', action='store_true',
                        help='close the wrist with the 14 faces the official renderer adds')
    parser.add_argument('--side', choices=('right', 'left'), default='right',
                        help='left: the mirrored hand (x negated, winding reversed), as HaMeR outputs left hands')
    parser.add_argument('--normals', action='store_true', help='also write per-vertex normals')


def run(args: argparse.Namespace) -> int:
    from hamer_ros.hamer.mano import closed_faces, faces_for_side
    from hamer_ros.io.mesh_io import write_obj
    from hamer_ros.io.render import vertex_normals

    mano = load_mano_from_args(args)
    vertices, _ = template_hand(mano, args.betas)
    faces = closed_faces(mano.faces) if args.closed else mano.faces
    is_right = args.side == 'right'
    if not is_right:
        vertices = vertices * [-1.0, 1.0, 1.0]   # docs/model.md §7: left hands are mirrored right hands
    faces = faces_for_side(faces, is_right)
    normals = vertex_normals(vertices, faces) if args.normals else None
    betas = ' '.join(f'{b:g}' for b in args.betas) or 'mean shape'
    path = write_obj(args.out, vertices, faces, normals,
                     comment=f'MANO {args.side} hand, rest pose, betas: {betas}\nMANO source: {mano.source}')
    print(f'wrote {path}: {len(vertices)} vertices, {len(faces)} faces ({args.side} hand, {betas}; '
          f'MANO from {mano.source})')
    return 0
