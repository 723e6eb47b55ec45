"""The hand search every front end uses (`detect`, `infer`, `live`, the node, the Python API): the multi-stage
`HandSearch` when LiteRT is installed, else MediaPipe's palm-only Tasks `HandDetector` with a clear warning (the
caller keeps running; it only misses the hands of people at a distance)."""
from __future__ import annotations

import logging
from typing import Optional

from hamer_ros.detection.search_models import litert_available

log = logging.getLogger(__name__)


def make_hand_detector(running_mode: str = 'image', num_hands: int = 8, search: bool = True,
                       body_stage: bool = True, palm_min_hand_size: float = 24.0,
                       palm_tiles_per_frame: int = 1, person_tiles: int = 3, max_people: int = 4,
                       full_search_period: int = 10, mirror_pass: bool = True, model_path=None,
                       min_detection_confidence: float = 0.5,
                       min_presence_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                       mirrored: bool = False, rgb_input: bool = False, warn=None, provision_model: bool = True):
    """A detector with `.detect(image, timestamp_ms)`, `.reset()`, `.close()`.

    search: False gives the palm-only Tasks detector (the whole frame at 192x192: close-up hands only).
    model_path: a user's `hand_landmarker.task`: the palm-only detector runs with it (the search runs only its own
        hash-pinned models, so a model of one's own means the palm-only detector).
    warn: called with the message when the search is asked for but LiteRT is missing (default: logging).
    provision_model: build missing models from the cached (or fetched) mediapipe wheel; False (the node): never
        fetch anything, a missing model raises ModelNotProvisioned with the set-up command.
    """
    search = search and model_path is None
    reason: Optional[str] = litert_available() if search else None
    if search and reason is None:
        from hamer_ros.detection.hand_search import HandSearch

        return HandSearch(running_mode=running_mode, num_hands=num_hands, body_stage=body_stage,
                          palm_min_hand_size=palm_min_hand_size,
                          palm_tiles_per_frame=palm_tiles_per_frame, person_tiles=person_tiles, max_people=max_people,
                          full_search_period=full_search_period, mirror_pass=mirror_pass,
                          min_detection_confidence=min_detection_confidence,
                          min_presence_confidence=min_presence_confidence,
                          min_tracking_confidence=min_tracking_confidence, mirrored=mirrored, rgb_input=rgb_input,
                          provision_models=provision_model)
    if reason is not None:
        (warn or log.warning)(reason)
    from hamer_ros.detection.hand_detector import HandDetector

    return HandDetector(model_path=model_path, running_mode=running_mode, num_hands=num_hands,
                        min_detection_confidence=min_detection_confidence,
                        min_presence_confidence=min_presence_confidence,
                        min_tracking_confidence=min_tracking_confidence, mirrored=mirrored, rgb_input=rgb_input,
                        provision_model=provision_model)


def add_search_arguments(parser) -> None:
    """The hand search's command-line options (`detect`, `infer`, `live`)."""
    parser.add_argument('--num-hands', type=int, default=8, help='most hands reported per frame (default 8)')
    parser.add_argument('--palm-only', action='store_true',
                        help="MediaPipe's palm-only hand landmarker instead of the multi-stage search (close-up hands)")
    parser.add_argument('--no-body-stage', action='store_true',
                        help='search without the body-guided stage (hands from people\'s wrists)')
    parser.add_argument('--palm-min-hand-size', type=float, default=24.0,
                        help='smallest hand (px) the zoomed palm search looks for: its finest tiles are 8x this '
                             '(default 24; smaller costs about 4x the tiles per halving; 0: whole frame only)')
    parser.add_argument('--palm-tiles-per-frame', type=int, default=1,
                        help='video: zoomed palm tiles per frame, in turn (default 1; 0: all on full searches; '
                             'images: all)')
    parser.add_argument('--person-tiles', type=int, default=3,
                        help='person detector tiles per image side besides the whole frame (default 3; 1: whole '
                             'frame only); images: all tiles, video: one per full search, in turn')
    parser.add_argument('--max-people', type=int, default=4,
                        help='most people per frame for the body stage (default 4)')
    parser.add_argument('--full-search-period', type=int, default=10,
                        help='video: frames between full searches while every hand stays tracked (default 10)')
    parser.add_argument('--no-mirror-pass', action='store_true',
                        help='no body-stage search on the image flipped left to right (it finds hands the image '
                             'itself hides from the models: images, a second pass for about the body stage\'s time '
                             'again; video, every other full search)')


def detector_from_args(args, running_mode: str, **options):
    """`make_hand_detector` with the options of `add_search_arguments` (plus `options`)."""
    return make_hand_detector(running_mode=running_mode, num_hands=args.num_hands, search=not args.palm_only,
                              body_stage=not args.no_body_stage, palm_min_hand_size=args.palm_min_hand_size,
                              palm_tiles_per_frame=args.palm_tiles_per_frame,
                              person_tiles=args.person_tiles, max_people=args.max_people,
                              full_search_period=args.full_search_period, mirror_pass=not args.no_mirror_pass,
                              **options)
