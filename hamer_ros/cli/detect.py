"""`python -m hamer_ros detect --image IMG [--mirrored] [--model PATH] --out OUT.json`: the hands of one image
(the multi-stage hand search; `--palm-only` for MediaPipe's palm-only landmarker).

OUT.json holds a list with one object per hand: `box_xyxy` (tight box, pixels of IMG), `side` ('left'/'right',
the subject's own hand), `side_score`, `score` (hand presence), `stage` (which search stage found it: 'palm',
'body'), `landmarks_2d` (21x2 pixels) and `landmarks_world` (21x3 m, hand-centred). The file is also a valid `--boxes` file for the commands that take boxes (hamer_ros.detection.boxes).
"""
from __future__ import annotations

import json
from pathlib import Path

from hamer_ros.cli.infer import add_image_size_argument
from hamer_ros.errors import InputError, MissingFileError


def add_arguments(parser) -> None:
    parser.add_argument('--image', required=True, type=Path, help='image file (anything OpenCV reads)')
    parser.add_argument('--out', required=True, type=Path, help='JSON file to write')
    parser.add_argument('--mirrored', action='store_true',
                        help='the image is horizontally mirrored (selfie view): swap the sides back')
    parser.add_argument('--model', type=Path, default=None,
                        help='a hand_landmarker.task of your own: runs the palm-only detector with it (default: the search)')
    from hamer_ros.detection.factory import add_search_arguments
    add_search_arguments(parser)
    add_image_size_argument(parser)
    parser.add_argument('--min-detection-confidence', type=float, default=0.5,
                        help='MediaPipe palm detection threshold (default 0.5)')
    parser.add_argument('--min-presence-confidence', type=float, default=0.5,
                        help='MediaPipe hand presence threshold (default 0.5)')


def run(args) -> int:
    from hamer_ros.detection import detection_to_json
    from hamer_ros.detection.factory import detector_from_args
    from hamer_ros.io.offline import read_image

    if not args.image.is_file():
        raise MissingFileError(f'image {args.image} does not exist')
    image, error = read_image(args.image, args.max_image_pixels)
    if image is None:
        raise InputError(error)
    with detector_from_args(args, 'image', model_path=args.model, mirrored=args.mirrored,
                            min_detection_confidence=args.min_detection_confidence,
                            min_presence_confidence=args.min_presence_confidence) as detector:
        hands = detector.detect(image)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([detection_to_json(hand) for hand in hands], indent=1))
    print(f'{len(hands)} hand(s) in {args.image}: ' + ', '.join(
        f'{hand.side} {hand.score:.2f} ({hand.stage}) [{", ".join(f"{v:.0f}" for v in hand.box_xyxy)}]' for hand in hands)
        + f' -> {args.out}')
    return 0

