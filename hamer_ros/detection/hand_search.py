"""The hand search for whole scenes: several people, hands from about 12 px up, in stages that fill each other's
gaps, merged without duplicates. Runs MediaPipe's models in LiteRT (`detection.search_models`).

Stages (each proposes hand regions; the hand landmark model then confirms every region with its presence score
and gives the 21 landmarks and the side):

* `tracked` (video mode): last frame's hands, re-checked in place with the lite landmark model (the region from
  their landmarks, as MediaPipe's hand_landmark_landmarks_to_roi.pbtxt: rotation wrist -> middle of the
  index/middle/ring PIPs, box of the palm and lower-finger landmarks, x2, shifted up 0.1); a hand the lite model
  no longer sees is re-checked with the full model before it is given up.
* `body`: BlazePose person detector (224x224, its own SSD anchors decoded here, weighted NMS, a person cap), the
  pose landmark model on each person's region (pose_detection_to_roi.pbtxt: centre hips, side 2 x hips -> scale
  point, x1.25), then a hand region per visible wrist from wrist / index / pinky (holistic's
  hand_detections_from_pose_to_rects_calculator.cc: centre (2 index + pinky) / 3, side 2 x its distance to the
  wrist; hand_landmarks_from_pose_to_recrop_roi.pbtxt: x2.7, shifted up 0.1), refined by hand_recrop.tflite
  (hand_recrop_by_roi_cpu.pbtxt: two points, centre the first, side 2 x their distance, target angle -90
  degrees, shifted up 0.1); where the lite landmark model sees no hand there, the region is tried turned by a
  quarter or half turn. The hand's side is also known from which wrist it is: both are combined.
* `palm`: the palm detector (192x192, MediaPipe's full model) on the whole frame, and an image pyramid of
  overlapping square tiles zoomed to its input (the lite palm model), for hands without a visible body
  (palm_detection_detection_to_roi.pbtxt: rotation wrist -> middle finger base, x2.6, shifted up 0.5). The
  tiles are sized by the smallest hand wanted (`palm_min_hand_size`): the palm detector sees most hands once
  they cover about an eighth of its input, so the finest tiles are 8 such hands wide, and each coarser level
  doubles them up to the frame (`palm_windows`).

Each new hand is run through the full landmark model once more in the region its own landmarks give (as
MediaPipe's next frame would), so its box and side do not depend on the pose's or the palm's region. The lite
landmark model screens every body region first (`lite_screen`): most of them hold no visible hand, and where one
does, the full model then runs once, straight in the region of the lite model's landmarks; palm regions are
screened too, at a lower level.
Hands that the landmark model cannot confirm but whose wrist, index and pinky the pose model sees clearly are
reported from the body alone (box, no landmarks): hands too small for the landmark model, and fists, gloved hands
and hands gripping something, which it often does not take for hands at any size.

In video mode the full search (body + whole-frame palm) runs on the first frame, whenever a tracked hand is lost
or nothing is tracked, and every `full_search_period` frames (a hand entering the view is found within that many
frames); in between the tracked regions are checked (one landmark model call per hand). The palm pyramid's tiles
run `palm_tiles_per_frame` a frame, in turn, on full searches while nothing is tracked and on tracked frames (a
periodic full search leaves its tile to the next frame), so no frame pays for more than one tile and a hand far
away is found within one pass over the pyramid (19 frames at 640x480). On a tracked frame the lite model only
screens the tile's palms; the full model confirms one on the next frame, which runs no tile, and a tracked frame
whose re-check needed the full model's second opinion leaves its palm work to the next frame (never two frames in
a row), so that a tracked frame pays for at most one of these. Image mode runs the full search, with every tile,
on every frame, and then the body stage once more on the frame flipped left to right (`mirror_pass`): the models
are not mirror-symmetric, and the hands only the mirror image shows are added. Video mode's full searches take the
frame and its mirror image in turn for the body stage (the palm stage stays on the frame), and a hand found on the
mirror image is re-checked on the tracked frames as the mirror image shows it.

Merging: hands whose boxes overlap (IoU > 0.3, or one mostly inside the other) are one hand; the one with the
higher presence wins, so every hand is reported once, with one side. `HandDetection.stage` says which stage
found it.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from hamer_ros.detection.regions import (Region, aligned_region, box_iou, crop, decode_ssd, letterbox_region,
                                         rotation_towards, ssd_anchors, to_image, weighted_nms)
from hamer_ros.types import STAGE_BODY, STAGE_PALM, STAGE_TRACKED, HandDetection

SEARCH_STAGES = (STAGE_TRACKED, STAGE_BODY, STAGE_PALM)    # the stages of this search (types.STAGES)
# Pose landmark indices (BlazePose 33 + 6 auxiliary): wrist, pinky, index per side of the subject.
_POSE_HAND_POINTS = {'left': (15, 17, 19), 'right': (16, 18, 20)}
_POSE_ELBOWS = {'left': 13, 'right': 14}
# Landmarks MediaPipe uses for the tracking region (palm and lower fingers).
_TRACKING_LANDMARKS = [0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18]
# The wrist's identity as a second opinion on the side: its log-odds (of this probability) are added to the hand
# model's, so a confident hand model (above this) outvotes a wrist of another, overlapping person. 0.9, not 0.8:
# the zoomed palm search finds small hands whose own crop says little about their side (dev set: 17 of 20 sides
# right with 0.8, 18 with 0.9 or 0.97).
_BODY_SIDE_CONFIDENCE = 0.9
_MIN_WRIST_VISIBILITY = 0.1        # holistic's hand_visibility_from_hand_landmarks_from_pose.pbtxt threshold
# Pose-only hands (HandSearch._pose_only_hand): box geometry from wrist / index / pinky, and the visibility needed.
POSE_ONLY_BOX_SCALE = 1.9
POSE_ONLY_CENTRE_OFFSET = 1.1
# Body regions: the pose's hand rotation first, then turned by these (radians) where the lite model sees no hand.
BODY_REGION_TURNS = (0.0, math.pi / 2, -math.pi / 2, math.pi)
# Palm pyramid (palm_windows): a tile is PALM_TILE_HAND_RATIO times the smallest hand of its level, so that hand
# covers 24 px of the palm detector's 192 px input; neighbouring tiles overlap by PALM_TILE_OVERLAP of the level's
# largest hand (twice the smallest), so every hand lies whole in some tile of its level. Measured on the dev set
# (test/data/scenes), with windows centred on each annotated hand: the detector's score reached 0.5 on 21 of 26
# hands >= 30 px at 64 px in its input, 18 at 38 px, 16 at 24 px; the lite palm model found 3 more of the 26 than
# the full one on the tiles, at four fifths of its time (docs/mediapipe.md).
PALM_TILE_HAND_RATIO = 8.0
PALM_TILE_OVERLAP = 2.0
# Tiles: edge strips under this share of a tile get no row or column of their own (one more row of tiles costs
# a detector run per column; the whole-frame pass still sees the strip).
TILE_EDGE_LEFT = 0.25
# Person tiles: a person found on a tile whose region (1.25 x the body's extent) is larger than this x the tile is
# dropped: the tile cut through someone the whole frame sees, and the pose from that part is a guess (on a 512 px
# close-up photo, a pose-only box on no hand). A body that reaches a little beyond its tile (legs cut at the edge)
# is kept: at 1.0 the dev set lost one small hand, at 1.5 none.
PERSON_TILE_MAX_SHARE = 1.5
PERSON_SAME_DISTANCE = 0.2    # same_person: hips closer than this x the person region's side
# Person tiles: none where they would be smaller than this (px; the whole frame alone then). A tile keeps people
# whose region is up to PERSON_TILE_MAX_SHARE x the tile, a body of 1.2 x the tile; a hand is about 0.108 of the
# stature (Drillis & Contini 1966), so the people a 96 px tile adds have hands of 13 px at most. Without it a 5x3000
# strip was cut into 750 tiles of 5 px (4.8 s a frame in image mode, 2-core AMD EPYC).
PERSON_TILE_MIN_SIDE = 96.0
# Full searches: the lite landmark model screens each body region at this fraction of the presence threshold
# (HandSearch's lite_screen). On the dev set (test/data/scenes) it saved two thirds of the body stage's full-model
# runs and lost no hand: wherever the full model confirmed a hand in a body region, the lite model's presence
# reached half the threshold. Palm regions, which the palm detector vouches for already, are screened at a fifth
# of that (PALM_SCREEN_SHARE): there the lite model's presence fell to 0.09 on a hand the full model confirmed
# at 0.72 (crowdpose_106848), while most regions on no hand stay below 0.05.
PALM_SCREEN_SHARE = 0.2
LITE_SCREEN = 0.5
# A pose-only hand is at least this x the forearm (elbow to wrist) in `d`: the tight box 1.9 d is then 0.48 forearm,
# against a hand length of about 0.74 forearm (body segment lengths: forearm 0.146, hand 0.108 of the stature,
# Drillis & Contini 1966); where the pose folds its index and pinky onto the wrist (gloved skiers), d is a few px.
POSE_ONLY_FOREARM_FLOOR = 0.25
# Video mode holds a pose-only hand (nothing to re-check) for at most this many frames before a full search looks
# again, however long full_search_period is: a person who walks out leaves no hand behind for longer than that.
POSE_ONLY_HOLD_FRAMES = 10
POSE_ONLY_MIN_VISIBILITY = 0.9   # 0.8 lets an arm-hidden hand of a crossed-arms pose through (bus photo, JPEG)
# Below POSE_ONLY_SMALL_SIZE px the landmark model cannot confirm even a clear hand (its presence is unreliable
# there: 15 of 31 dev-set hands under 30 px confirmed in regions centred on them), so its silence says nothing
# and the pose alone decides, at a lower visibility. On the dev set (test/data/scenes, person tiles 3), the pose-only
# boxes under 30 px at visibility 0.8-0.9 all lay on annotated or unannotated people's hands; at 30 px and more,
# two of five lay on no hand.
POSE_ONLY_SMALL_SIZE = 30.0
POSE_ONLY_SMALL_MIN_VISIBILITY = 0.8
# merge_hands: a pose-only box whose centre lies within this x a confirmed hand's size of that hand's box is that hand.
POSE_ONLY_NEAR_HAND = 0.5
# Video mode, tracked frames: the palms a pyramid tile found (screened by the lite model) that the full model
# confirms on the next frame, in place of that frame's tile. At 640x480 with four tracked hands, a frame that ran
# a tile and then confirmed and refined a new hand took 26-29 ms on a 2-core CPU (two full-model runs after the
# tile; docs/performance.md).
PENDING_PER_FRAME = 1
# Video mode: a hand followed since an earlier frame that its re-check loses (hidden for a moment by an object or
# another hand, blurred, turned away) is re-checked where it was last for this many frames (1 s at 30 Hz), as
# tracked hands are, until it is confirmed there again or reported elsewhere. The full model gives its second
# opinion only where the tracking model's presence reaches LOST_SCREEN (on palm regions on no hand the lite model
# mostly stays under it, PALM_SCREEN_SHARE). Before, a lost hand that the full search's body stage and whole-frame
# palm did not find again waited for the pyramid's turn to come back to it (19 tiles at 640x480, 173 at
# 1920x1080): on the dev set streamed with its tracked hands hidden for 10 frames, all 44 are reported again on the
# first frame that shows them, where 23 were before (the slowest after 180 frames, one not within 330;
# docs/performance.md).
LOST_RECHECK_FRAMES = 30
LOST_SCREEN = 0.05
# Video mode: a tracked hand's side. The hand model's answers on one hand from frame to frame are one opinion seen
# again, not new evidence, and the body's wrist, its second opinion, is seen on full searches only. So a tracked
# hand's P(right) is the mean of the hand model's log-odds over its last SIDE_MEMORY_FRAMES frames, plus the
# log-odds of the body's wrist last seen at it (combine_sides; a full search that sees no wrist there keeps the
# last one). Before, each tracked frame gave the hand model's answer alone: on the dev set streamed (aic_ff945), a
# hand the wrist had put right on the full search went to the wrong side on every frame in between.
SIDE_MEMORY_FRAMES = 10
# A palm-stage hand on a body's head (the box of the pose's face points, grown by HEAD_MARGIN of its longer side
# each way) with no body's wrist within HEAD_REACH x the hand's size is dropped (`_on_a_head_out_of_reach`).
HEAD_MARGIN = 0.25
HEAD_REACH = 2.0


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class HandSearch:
    """Hands in whole scenes (see the module docstring); the same `detect` / `reset` / `close` as `HandDetector`.

    running_mode: 'image' (full search every frame) or 'video' (tracking between full searches).
    num_hands: most hands reported per frame.
    body_stage / palm_stage: switch the stages (at least one; tracking is always on in video mode).
    palm_min_hand_size: the smallest hand (px, longer side) the zoomed palm search looks for: the pyramid's
        finest tiles are 8x this (`palm_windows`); smaller values cost more tiles (about 4x per halving);
        0: the palm detector sees the whole frame only.
    palm_tiles_per_frame: video mode: each frame (full search or tracked frame) runs this many of the pyramid's
        tiles, in turn, so that a frame's cost stays within a real-time budget and the whole pyramid is covered
        every ceil(tiles / this) frames (640x480 has 19 tiles at palm_min_hand_size 24), a little later where a
        tracked frame confirms what the last tile found or its re-check needed the full model (no tile then);
        0: all tiles on every full search (and none in between). Image mode always runs every tile.
    person_tiles: tiles per image side for the person detector, besides the whole frame (1: whole frame only;
        more finds people far away, whom the detector's 224 px input of the whole frame shrinks too much: on the
        dev set 3 found 14 of 33 hands under 30 px instead of 10, at 7 detector runs at 640x480 instead of 1).
        Image mode runs every tile on every frame; video mode runs one tile per full search, in turn, with the
        whole frame, so that a full search's cost stays within a real-time budget.
    max_people: most people the body stage follows per frame (the best-scoring ones).
    full_search_period: video mode: frames between full searches while every hand stays tracked (1: every frame).
        A full search skips the body wrists and palms at hands the tracked re-check confirmed on the same frame.
    min_detection_confidence: palm and person detector score threshold.
    min_presence_confidence: hand landmark model presence threshold (every stage).
    min_tracking_confidence: presence a tracked hand needs to stay tracked.
    mirrored / rgb_input: as `HandDetector`.
    num_threads: LiteRT threads per model.
    tracking_model: 'lite' (default: MediaPipe's hand_landmark_lite, about 4x faster) or 'full' for the re-check
        of tracked hands in video mode; full searches always confirm with the full model.
    lite_screen: full searches: every body region (and, at a fifth of this, every palm region) is first run
        through the lite landmark model (same input and outputs as the full one, about 4x faster), and the full
        model, which gives the reported landmarks, runs only where the lite model's presence reaches this
        fraction of min_presence_confidence; most regions show no hand, so this saves most full-model runs
        (0: no screening, the full model on every region, and no turned body regions).
    pose_only_max_size: body stage: hands the landmark model does not confirm but the pose sees clearly are
        reported from the pose alone (box only, no landmarks) when smaller than this (px); inf (default): at any
        size; 0 turns that off. Video mode holds such a hand at the body's box until the next full search (it
        has no landmarks to re-check): it is reported on every frame, and a frame whose only hands are pose-only
        is not a reason for a full search; one is held for at most POSE_ONLY_HOLD_FRAMES (10) frames, so a long
        full_search_period brings the full search sooner while pose-only hands are in view.
    mirror_pass: the body stage also looks at the frame flipped left to right, and the hands it confirms there
        (with landmarks) are flipped back. The person, pose and hand models are not mirror-symmetric: a person or
        hand one of the two views misses, the other often finds. Image mode: a second body-stage pass on every
        frame, whose hands are added where the first pass confirmed none (`_mirror_pass`; a pose-only box of the
        first pass gives way to such a hand), for about the body stage's time again. Video mode: every other full
        search runs its body stage on the mirror image instead of the frame (`_mirror_full_search`, same cost),
        and the hands found there are re-checked on the tracked frames as the mirror image shows them; the
        pose-only hands of the last full search on the frame stay held through it.
    """

    def __init__(self, running_mode: str = 'image', num_hands: int = 8, body_stage: bool = True,
                 palm_stage: bool = True, palm_min_hand_size: float = 24.0, palm_tiles_per_frame: int = 1,
                 person_tiles: int = 3, max_people: int = 4,
                 full_search_period: int = 10,
                 min_detection_confidence: float = 0.5, min_presence_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, mirrored: bool = False, rgb_input: bool = False,
                 num_threads: int = 2, pose_only_max_size: float = math.inf, tracking_model: str = 'lite',
                 lite_screen: float = LITE_SCREEN, mirror_pass: bool = True,
                 provision_models: bool = True):
        from hamer_ros.detection.hand_detector import RUNNING_MODES
        from hamer_ros.detection.search_models import LITERT_MISSING, TfliteModel, ensure_search_models, \
            litert_available

        if running_mode not in RUNNING_MODES:
            raise ValueError(f"running_mode must be one of {RUNNING_MODES}, got {running_mode!r}")
        if not (palm_min_hand_size == 0 or 8.0 <= palm_min_hand_size <= 4096.0):
            raise ValueError(f'palm_min_hand_size must be 0 (whole frame only) or 8..4096 px, got {palm_min_hand_size}')
        for name, value, low in (('num_hands', num_hands, 1), ('person_tiles', person_tiles, 1),
                                 ('palm_tiles_per_frame', palm_tiles_per_frame, 0),
                                 ('max_people', max_people, 1), ('full_search_period', full_search_period, 1),
                                 ('num_threads', num_threads, 1)):
            if int(value) < low:
                raise ValueError(f'{name} must be at least {low}, got {value}')
        for name, value in (('min_detection_confidence', min_detection_confidence),
                            ('min_presence_confidence', min_presence_confidence),
                            ('min_tracking_confidence', min_tracking_confidence)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'{name} must lie in [0, 1], got {value}')
        if not (body_stage or palm_stage):
            raise ValueError('turn on at least one of the body and palm stages, or no new hand is ever found')
        if litert_available() is not None:
            raise ImportError(LITERT_MISSING)
        self.running_mode = running_mode
        self.num_hands = int(num_hands)
        self.body_stage, self.palm_stage = bool(body_stage), bool(palm_stage)
        self.palm_min_hand_size = float(palm_min_hand_size)
        self.palm_tiles_per_frame = int(palm_tiles_per_frame)
        self.person_tiles, self.max_people = int(person_tiles), int(max_people)
        self.full_search_period = int(full_search_period)
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_presence_confidence = float(min_presence_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.mirrored, self.rgb_input = bool(mirrored), bool(rgb_input)
        self.pose_only_max_size = float(pose_only_max_size)
        if tracking_model not in ('lite', 'full'):
            raise ValueError(f"tracking_model must be 'lite' or 'full', got {tracking_model!r}")
        self._tracking_model = f'hand_landmark_{tracking_model}'
        if not 0.0 <= lite_screen <= 1.0:
            raise ValueError(f'lite_screen must lie in [0, 1], got {lite_screen}')
        self.lite_screen = float(lite_screen)
        self.mirror_pass = bool(mirror_pass)
        names = sorted({'hand_landmark_full', self._tracking_model}
                       | ({'hand_landmark_lite'} if self.lite_screen > 0 else set())) + \
            (['palm_detection_full', 'palm_detection_lite'] if palm_stage else []) + \
            (['pose_detection', 'pose_landmark_full', 'hand_recrop'] if body_stage else [])
        paths = ensure_search_models(names, provision=provision_models)
        self._models = {name: TfliteModel(path, num_threads) for name, path in paths.items()}
        self._palm_anchors = ssd_anchors(192, (8, 16, 16, 16))
        self._pose_anchors = ssd_anchors(224, (8, 16, 32, 32, 32))
        self.last_timings: Dict[str, float] = {}      # seconds per stage of the last frame
        self.full_searches = 0
        self.heads_dropped = 0       # palm-stage hands dropped as a head out of any arm's reach, since start
        self.reset()

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forgets the stream (video mode: tracked hands, their sides, held and pending finds, the tiles' turns);
        `detect` does it by itself when the frame size changes."""
        self._tracked: List[HandDetection] = []
        # video mode: the tracked hands that are new on the last frame (no hand re-checked there overlaps them)
        self._new: List[HandDetection] = []
        # video mode: each tracked hand's side evidence, and this frame's: id(hand) -> (the hand, _SideEvidence); the
        # hand held there keeps its id from going to another object while the entry lives (`_evidence`)
        self._sides: Dict[int, Tuple[HandDetection, _SideEvidence]] = {}
        self._frame_sides: Dict[int, Tuple[HandDetection, _SideEvidence]] = {}
        # video mode: palm regions a tracked frame's pyramid tile found and the lite model passed, with the lite
        # model's hand (or None), left to the next frame to confirm
        self._pending: List[Tuple[Region, Optional[HandDetection]]] = []
        self._postponed = False
        self._frames_since_full = 0
        # the last full search's heads (boxes) and all its bodies' wrists (px)
        self._heads: Tuple[List[np.ndarray], List[np.ndarray]] = ([], [])
        self._tile_cursor = 0          # video mode: the pyramid tile the next frame starts with
        # video mode: (hand, frames left, its side evidence, mirror view) of the hands followed since an earlier frame
        # that their re-check lost, re-checked where they were last (LOST_RECHECK_FRAMES)
        self._coasting: List[Tuple[HandDetection, int, Optional[_SideEvidence], bool]] = []
        self._person_cursor = 0        # video mode: the person tile the next full search runs
        # video mode: the people each person tile found when it last ran (tile number -> [(score, region)])
        self._tile_people: Dict[int, list] = {}
        # video mode's mirror pass: whether the next full search runs on the mirror image; that image's own tile
        # people and person-tile turn; the tracked hands found on it (id -> (the hand, True)), re-checked on it
        self._mirror_turn = False
        self._mirror_tile_people: Dict[int, list] = {}
        self._mirror_person_cursor = 0
        self._mirror_views: Dict[int, Tuple[HandDetection, bool]] = {}
        self._frame_mirror_views: Dict[int, Tuple[HandDetection, bool]] = {}
        # the last frame's size: another size starts a new stream, so none of the state above outlives its size
        self._frame_shape: Tuple[int, ...] = ()

    def close(self) -> None:
        self._tracked, self._new, self._pending, self._tile_people, self._coasting = [], [], [], {}, []
        self._sides, self._frame_sides = {}, {}
        self._mirror_tile_people, self._mirror_views, self._frame_mirror_views = {}, {}, {}

    def __enter__(self) -> 'HandSearch':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, image: np.ndarray, timestamp_ms: Optional[float] = None) -> List[HandDetection]:
        """Hands in `image` (uint8 HxWx3, BGR unless `rgb_input`; HxW grey accepted). `timestamp_ms` is accepted
        for the `HandDetector` interface; frames are taken in the order given."""
        rgb = self._to_rgb(image)
        if self._frame_shape and rgb.shape != self._frame_shape:
            # video mode: a frame of another size (a camera's resolution switched, another source) is a new stream:
            # last frame's hands, held pose-only boxes and pending palms lie in the old frame's pixels, and a held
            # box would be reported outside the new frame and put off the full search (`reset`)
            self.reset()
        self._frame_shape = rgb.shape
        timings = self.last_timings = {}
        found: List[HandDetection] = []
        held: List[HandDetection] = []
        rechecked: List[HandDetection] = []     # video mode: the tracked hands this frame's re-check confirmed
        self._frame_sides = {}
        self._frame_mirror_views = {}
        lost = False
        rescued = False
        coasting, self._coasting = self._coasting, []
        if self.running_mode == 'video' and coasting:
            # hands lost on one of the last LOST_RECHECK_FRAMES frames, re-checked where they were last: the tracking
            # model, and the full model's second opinion where the first one's presence reaches LOST_SCREEN
            start = time.perf_counter()
            for hand, left, side, mirror_view in coasting:
                confirmed, _ = self._recheck(rgb, hand, side, mirror_view, screen=LOST_SCREEN)
                if confirmed is not None:
                    found.append(confirmed)
                elif left > 1:
                    self._coasting.append((hand, left - 1, side, mirror_view))
            timings['lost_recheck'] = time.perf_counter() - start
            rechecked = list(found)
        if self.running_mode == 'video' and self._tracked:
            start = time.perf_counter()
            for hand in [h for h in self._tracked if h.landmarks_2d is not None]:
                # a hand found on the mirror image is re-checked as the mirror image shows it
                mirror_view = _evidence(self._mirror_views, hand) is not None
                side = _evidence(self._sides, hand)
                confirmed, asked_full = self._recheck(rgb, hand, side, mirror_view)
                rescued = rescued or asked_full
                if confirmed is not None:
                    found.append(confirmed)
                elif not any(hand is new for new in self._new):
                    # a hand followed since an earlier frame is gone: look for it at once. A hand new on the last
                    # frame that fails its first re-check is not (the body or palm stage confirmed a region that
                    # the landmark model does not hold on to): a full search would find it and lose it again on
                    # every frame (dev set, posetrack18_012834), so it waits for the next scheduled full search
                    lost = True
                    self._coasting.append((hand, LOST_RECHECK_FRAMES, side, mirror_view))
            timings['tracked'] = time.perf_counter() - start
            rechecked = list(found)
            found = merge_hands(found, self.num_hands)
            lost = lost or len(found) < len(rechecked)
            # pose-only hands have no landmarks to re-check: they are held where the body put them until the next
            # full search (at most full_search_period or POSE_ONLY_HOLD_FRAMES frames), so that they neither blink
            # out on tracked frames nor force a full search on every frame
            held = [h for h in self._tracked if h.landmarks_2d is None]
        self._frames_since_full += 1
        full = (self.running_mode == 'image' or not (found or held) or lost
                or self._frames_since_full >= self.full_search_period
                or (held and self._frames_since_full >= POSE_ONLY_HOLD_FRAMES))
        pending = self._pending
        self._pending = []
        # video mode: a tracked frame whose re-check needed the full model's second opinion leaves its palm work
        # (a tile, or confirming what the last tile found) to the next frame, but never two frames in a row
        postpone = not full and rescued and not self._postponed
        self._postponed = postpone
        # video mode: a full search while hands are tracked leaves the pyramid's tile to the next (tracked) frame,
        # and so does a frame that confirms what the last frame's tile found, so that no frame pays for both;
        # palm_tiles_per_frame 0: every tile on each full search, none in between
        if self.running_mode == 'image':
            run_tiles = True
        elif self.palm_tiles_per_frame == 0:
            run_tiles = full
        else:
            run_tiles = not ((full and found) or pending or postpone)
        palm_tiles = self._palm_tiles(rgb) if run_tiles else []
        if full:
            self.full_searches += 1
            self._frames_since_full = 0
            mirror_search = False
            if self.running_mode == 'video' and self.mirror_pass and self.body_stage:
                # video mode's mirror pass: every other full search runs the body stage on the mirror image
                mirror_search, self._mirror_turn = self._mirror_turn, not self._mirror_turn
            if mirror_search:
                new, wrists, refined = self._mirror_full_search(rgb, palm_tiles=palm_tiles, tracked=found,
                                                                pending=pending)
            else:
                new, wrists, refined = self._full_search(rgb, palm_tiles=palm_tiles, tracked=found, pending=pending)
            for hand in found:
                # a tracked hand at a body's wrist: that wrist is its second opinion from now on
                side, evidence = _wrist_side(hand, wrists), _evidence(self._frame_sides, hand)
                if side is not None and evidence is not None:
                    self._side_evidence(hand, evidence._replace(wrist_side=side))
            found = merge_hands(found + self._refine(rgb, merge_hands(new, 10 ** 6), wrists, refined),
                                self.num_hands)
            if self.running_mode == 'image' and self.mirror_pass and self.body_stage:
                found = merge_hands(found + self._mirror_pass(rgb, found), self.num_hands)
            if mirror_search:
                # the pose-only hands the last full search (on the frame itself) found stay held: the mirror
                # image's pose-only hands are not kept (as in image mode), and the next full search is on the frame
                found = merge_hands(found + held, self.num_hands)
        else:
            if postpone:
                self._pending = list(pending)
            elif (palm_tiles or pending) and len(found) < self.num_hands:
                # video mode between full searches: the pyramid goes on, palm_tiles_per_frame tiles a frame, so that
                # a hand appearing far away is found within a few frames (19 at 640x480) while others are tracked;
                # a palm on a held pose-only hand is confirmed too, and its landmarks then replace the body's box.
                # A tile's palms are only screened by the lite model on its own frame; the full model confirms
                # them on the next one, one a frame, in place of that frame's tile, so that no tracked frame pays
                # for a tile and a new hand's full-model runs together (see PENDING_PER_FRAME)
                self._pending = list(pending[PENDING_PER_FRAME:])
                new, refined = self._palm_hands(rgb, palm_tiles, found, whole_frame=False,
                                                pending=pending[:PENDING_PER_FRAME], defer=self._pending)
                if new:
                    found = merge_hands(found + self._refine(rgb, new, [], refined), self.num_hands)
            found = merge_hands(found + held, self.num_hands)
        self._tracked = list(found) if self.running_mode == 'video' else []
        self._coasting = [entry for entry in self._coasting
                          if not any(_overlaps(entry[0].box_xyxy, hand.box_xyxy) for hand in found)]
        self._sides = {id(h): self._frame_sides[id(h)] for h in self._tracked
                       if _evidence(self._frame_sides, h) is not None}
        self._mirror_views = {id(h): self._frame_mirror_views[id(h)] for h in self._tracked
                              if _evidence(self._frame_mirror_views, h) is not None}
        self._new = [h for h in self._tracked
                     if not any(_overlaps(h.box_xyxy, other.box_xyxy) for other in rechecked)]
        return list(found)

    # ------------------------------------------------------------------ stages
    def _palm_tiles(self, rgb: np.ndarray) -> List[Region]:
        """The pyramid tiles this frame runs: all of them (image mode, or palm_tiles_per_frame 0), else the next
        palm_tiles_per_frame in turn."""
        if not self.palm_stage or self.palm_min_hand_size <= 0:
            return []
        height, width = rgb.shape[:2]
        tiles = palm_windows(width, height, self.palm_min_hand_size)[1:]
        budget = self.palm_tiles_per_frame
        if self.running_mode == 'image' or budget == 0 or len(tiles) <= budget:
            return tiles
        start = self._tile_cursor % len(tiles)
        self._tile_cursor = (start + budget) % len(tiles)
        return [tiles[(start + i) % len(tiles)] for i in range(budget)]

    def _full_search(self, rgb: np.ndarray, palm_tiles: List[Region],
                     tracked: Sequence[HandDetection] = (),
                     pending: Sequence[Tuple[Region, Optional[HandDetection]]] = (), palm: bool = True):
        """(new hands, [(side, wrist px, visibility)] of the bodies' visible wrists, the new hands found in the
        region of their own landmarks already). `palm_tiles`: the pyramid tiles the palm detector runs on;
        `tracked`: hands the tracked re-check confirmed on this frame: a body wrist at one of them (`_at_wrist`) is
        not searched again, and no palm on one is confirmed again. `palm` False: the body stage alone."""
        hands: List[HandDetection] = []
        wrists: List[Tuple[str, np.ndarray, float]] = []
        refined: List[HandDetection] = []
        if self.body_stage:
            start = time.perf_counter()
            candidates = []
            heads: List[np.ndarray] = []
            arms: List[np.ndarray] = []
            for tile, person in self._people(rgb):
                from_pose, head, person_wrists = self._hand_regions_from_pose(rgb, person)
                if head is not None:
                    heads.append(head)
                    arms += person_wrists
                if tile and not from_pose:
                    self._forget_tile_person(tile, person)
                for side, region, wrist, visibility, pose_hand in from_pose:
                    wrists.append((side, wrist, visibility))
                    candidates.append((region, wrist, pose_hand))
            self.last_timings['body_pose'] = time.perf_counter() - start
            start = time.perf_counter()
            for region, wrist, pose_hand in candidates:
                if any(_at_wrist(hand, wrist) for hand in tracked):
                    continue        # tracked already: its landmarks come from this frame's re-check
                hand, in_own_region = self._body_hand(rgb, self._recrop(rgb, region))
                if in_own_region:
                    refined.append(hand)
                if hand is None:
                    hand = pose_hand      # small and clearly visible: the body's own box (or None)
                if hand is not None:
                    hands.append(hand)
            self.last_timings['body_hands'] = time.perf_counter() - start
            self._heads = (heads, arms)
        if self.palm_stage and palm:
            palm_hands, palm_refined = self._palm_hands(rgb, palm_tiles, list(tracked) + hands, pending=pending)
            hands += palm_hands
            refined += palm_refined
        return hands, wrists, refined

    def _mirror_pass(self, rgb: np.ndarray, found: Sequence[HandDetection]) -> List[HandDetection]:
        """Image mode: the hands the body stage confirms (with landmarks) on the frame flipped left to right, flipped
        back, where no hand with landmarks in `found` (the first pass's) overlaps them; a pose-only box there then
        gives way to the confirmed hand in `merge_hands` (dev set, posetrack18_003418: a raised fist that only the
        mirror image confirms). The models are not mirror-symmetric: on
        nine group photos that tuned nothing (benchmarks/data/voc_group_photos.json, at x0.75, x1 and x1.5) this
        finds 36 of 53 hands >= 30 px instead of 31, with 7 boxes on no hand instead of 6; on the dev set at five
        scales, as is and mirrored, 199 / 346 and 115 / 284 instead of 197 and 112, 70 wrong boxes instead of 67
        (docs/performance.md). Only the body stage runs again, and only its confirmed hands are kept: the
        mirror's pose-only and palm hands added more wrong boxes than hands. Sides are the subject's: the pass
        runs with `mirrored` inverted, which swaps both the hand model's and the pose's sides back."""
        start = time.perf_counter()
        timings, heads = self.last_timings, self._heads
        self.last_timings = {}
        self._swap_views()
        try:
            flipped = np.ascontiguousarray(rgb[:, ::-1])
            new, wrists, refined = self._full_search(flipped, palm_tiles=[], palm=False)
            hands = self._refine(flipped, merge_hands(new, 10 ** 6), wrists, refined)
        finally:
            self._swap_views()
            self.last_timings, self._heads = timings, heads
        width = rgb.shape[1]
        added: List[HandDetection] = []
        for hand in hands:
            if hand.landmarks_2d is None:
                continue
            hand = _flipped(hand, width)
            if not any(_overlaps(hand.box_xyxy, other.box_xyxy) for other in list(found) + added
                       if other.landmarks_2d is not None):
                added.append(hand)
        self.last_timings['mirror_pass'] = time.perf_counter() - start
        return added

    def _mirror_full_search(self, rgb: np.ndarray, palm_tiles: List[Region], tracked: Sequence[HandDetection],
                            pending: Sequence[Tuple[Region, Optional[HandDetection]]]):
        """Video mode's mirror pass, every other full search: `_full_search` with the body stage on the frame
        flipped left to right (with that image's own tile people and person-tile turn) and the palm stage on the
        frame itself. As in image mode's `_mirror_pass`, only the body hands confirmed with landmarks are kept; they
        are flipped back, refined (`_refine`) and re-checked on the frames that track them as the mirror image shows
        them (`_confirm`'s mirror_view), since the frame itself may not confirm them. Same return as
        `_full_search`; the bodies' wrists and heads come back in this frame's pixels."""
        start = time.perf_counter()
        width = rgb.shape[1]
        flipped = np.ascontiguousarray(rgb[:, ::-1])
        self._swap_views()
        try:
            new, wrists, refined = self._full_search(flipped, palm_tiles=[], palm=False,
                                                     tracked=[_flipped(h, width) for h in tracked])
        finally:
            self._swap_views()
        found, found_refined = [], []
        for hand in new:
            if hand.landmarks_2d is None:
                continue
            back = _flipped(hand, width)
            self._frame_mirror_views[id(back)] = (back, True)     # `_refine` confirms it on the mirror image too
            found.append(back)
            if any(hand is other for other in refined):
                found_refined.append(back)
        wrists = [(side, _mirror_points(wrist, width), visibility) for side, wrist, visibility in wrists]
        heads, arms = self._heads
        self._heads = ([_mirror_box(head, width) for head in heads], [_mirror_points(arm, width) for arm in arms])
        self.last_timings['mirror_search'] = time.perf_counter() - start
        if self.palm_stage:
            palm_hands, palm_refined = self._palm_hands(rgb, palm_tiles, list(tracked) + found, pending=pending)
            return found + palm_hands, wrists, found_refined + palm_refined
        return found, wrists, found_refined

    def _swap_views(self) -> None:
        """Between the frame and its mirror image (its own inverse): `mirrored` inverted, so that sides found on the
        mirror image stay the subject's, and the other image's tile people and person-tile turn put in place (video
        mode keeps them per image; image mode uses neither)."""
        self.mirrored = not self.mirrored
        self._tile_people, self._mirror_tile_people = self._mirror_tile_people, self._tile_people
        self._person_cursor, self._mirror_person_cursor = self._mirror_person_cursor, self._person_cursor

    def _palm_hands(self, rgb: np.ndarray, tiles: List[Region], known: List[HandDetection],
                    whole_frame: bool = True, pending: Sequence[Tuple[Region, Optional[HandDetection]]] = (),
                    defer: Optional[List[Tuple[Region, Optional[HandDetection]]]] = None
                    ) -> Tuple[List[HandDetection], List[HandDetection]]:
        """(new hands from the palm detector (on the whole frame, and the lite one on `tiles`), each confirmed by
        the landmark model (`_palm_hand`), those of them found in the region of their own landmarks already);
        palms on a `known` hand are skipped (no second landmark run). `pending`: palm regions an earlier frame
        found and screened (`defer`), confirmed first. `defer` (a list): the palms found here are only screened by
        the lite model, and those that pass are appended to it, with the lite model's hand, for a later frame to
        confirm."""
        start = time.perf_counter()
        regions = self._palm_regions(rgb, tiles, whole_frame)
        self.last_timings['palm_detect'] = time.perf_counter() - start
        start = time.perf_counter()
        known = merge_hands(list(known), 10 ** 6)
        new, refined = [], []
        candidates = [(region, lite, True) for region, lite in pending] + [(r, None, False) for r in regions]
        for region, lite, screened in candidates:
            if any(_overlaps(region_box(region, 1 / 2.6), hand.box_xyxy) for hand in known):
                continue
            if not screened:
                passed, lite = self._palm_screen(rgb, region)
                if not passed:
                    continue
                if defer is not None:
                    defer.append((region, lite))
                    continue
            hand, in_own_region = self._palm_hand(rgb, region, lite)
            if hand is not None and self._on_a_head_out_of_reach(hand):
                self.heads_dropped += 1
                continue
            if hand is not None:
                new.append(hand)
                known.append(hand)
                if in_own_region:
                    refined.append(hand)
        self.last_timings['palm_hands'] = time.perf_counter() - start
        return new, refined

    def _palm_screen(self, rgb: np.ndarray, region: Region) -> Tuple[bool, Optional[HandDetection]]:
        """(whether a palm region goes on to the full landmark model, the lite model's hand there or None). With
        `lite_screen`, the lite model looks first, and the region is dropped where its presence stays under
        PALM_SCREEN_SHARE x lite_screen of the threshold."""
        if self.lite_screen <= 0.0:
            return True, None
        lite = self._confirm(rgb, region, STAGE_PALM,
                             PALM_SCREEN_SHARE * self.lite_screen * self.min_presence_confidence,
                             'hand_landmark_lite')
        return lite is not None, lite

    def _palm_hand(self, rgb: np.ndarray, region: Region, lite: Optional[HandDetection]
                   ) -> Tuple[Optional[HandDetection], bool]:
        """(the hand the full landmark model confirms in a palm region or None, whether it was found in the region
        of its own landmarks already). Where the lite model was sure of the hand (`lite`, its presence at the
        threshold), the full model runs straight in the region of the lite model's landmarks, which is what
        `_refine` would do next (one full run instead of two); otherwise, or where the full model sees no hand
        there, in the palm's region."""
        threshold = self.min_presence_confidence
        if lite is not None and lite.score >= threshold:
            hand = self._confirm(rgb, tracking_region(lite.landmarks_2d), STAGE_PALM, threshold)
            if hand is not None:
                return hand, True
        return self._confirm(rgb, region, STAGE_PALM, threshold), False

    def _body_hand(self, rgb: np.ndarray, region: Region) -> Tuple[Optional[HandDetection], bool]:
        """(the hand the landmark model confirms in a body-derived region or None, whether it was found in the
        region of its own landmarks already). With `lite_screen` the lite model looks first, and the full model
        then runs straight in the region the lite model's landmarks give (what `_refine` would do next: one full
        run instead of two); where it sees no hand there, in the pose's region. The landmark model wants the hand
        upright (wrist down) and its presence falls to zero when the region's rotation is far off; the pose's
        direction of the hand (wrist -> index and pinky) is least reliable on the small, bent or half-hidden hands
        the model misses, so where the lite model sees no hand, the region turned by 90, -90 and 180 degrees is
        screened too (lite runs only; on the dev set one more hand >= 30 px, no more wrong boxes)."""
        if self.lite_screen <= 0.0:
            return self._confirm(rgb, region, STAGE_BODY, self.min_presence_confidence), False
        for turn in BODY_REGION_TURNS:
            turned = Region(region.cx, region.cy, region.size, region.angle + turn)
            lite = self._confirm(rgb, turned, STAGE_BODY, self.lite_screen * self.min_presence_confidence,
                                 'hand_landmark_lite')
            if lite is None:
                continue
            hand = self._confirm(rgb, tracking_region(lite.landmarks_2d), STAGE_BODY, self.min_presence_confidence)
            if hand is not None:
                return hand, True
            hand = self._confirm(rgb, turned, STAGE_BODY, self.min_presence_confidence)
            if hand is not None:
                return hand, False
        return None, False

    def _refine(self, rgb: np.ndarray, hands: List[HandDetection], wrists,
                refined_already: List[HandDetection]) -> List[HandDetection]:
        """Each new hand once more in the region its own landmarks give (as MediaPipe's next frame would): its
        landmarks and the hand model's side then no longer depend on the pose's or the palm's region. A hand the
        landmark model does not confirm there is dropped: it was a region's find that the model does not hold on to,
        and video mode would lose it at its first re-check (dev set resized x0.5-2, `bench_scene_recall.py
        --scales`: 43 boxes on no annotated hand instead of 48, the same hands >= 30 px, one small hand fewer at
        x0.5). Every side is then combined with the body's wrist at the hand, when there is one."""
        start = time.perf_counter()
        refined = []
        for hand in hands:
            if hand.landmarks_2d is None or any(hand is other for other in refined_already):
                # a pose-only hand has nothing to refine
                refined.append(self._side_from_wrists(hand, wrists))
                continue
            mirror_view = _evidence(self._frame_mirror_views, hand) is not None
            again = self._confirm(rgb, tracking_region(hand.landmarks_2d), hand.stage, self.min_presence_confidence,
                                  mirror_view=mirror_view)
            if again is not None:
                if mirror_view:
                    self._frame_mirror_views[id(again)] = (again, True)
                refined.append(self._side_from_wrists(again, wrists))
        self.last_timings['refine'] = time.perf_counter() - start
        return refined

    def _people(self, rgb: np.ndarray) -> List[Tuple[int, Region]]:
        """(window number: 0 the whole frame, 1... a tile; person region) from the BlazePose detector on the
        letterboxed whole frame and on zoomed tiles (person_tiles > 1: people far away are too small for it in the
        whole frame; `_person_windows`), at most max_people, one person seen by several windows kept once
        (`same_person`). The whole frame's people come first, best first, then the tiles' (best first): a tile can
        cut through a person, and its region of that person, even at a higher score, places the pose worse (the bus
        photo: a hand box 5 px off). Video mode runs one tile per full search and keeps what each tile found until
        that tile runs again: a person only a tile finds, and the hands the pose gives them, stay from one full
        search to the next instead of blinking with the tiles' turn (a kept person in whom the pose sees no wrist is
        dropped, `_forget_tile_person`)."""
        found: Dict[int, list] = {}
        for tile, window in self._person_windows(rgb):
            found[tile] = []
            tensor, matrix = crop(rgb, window, 224, (-1.0, 1.0))
            raw_boxes, raw_scores = self._models['pose_detection'].run(tensor)
            for person in weighted_nms(decode_ssd(raw_boxes, raw_scores, self._pose_anchors, 224, 4,
                                                  self.min_detection_confidence), 0.3, self.max_people):
                points = to_image(person.keypoints, matrix)
                # keypoint 0: mid-hip centre, 1: the point giving the body's size and rotation.
                region = aligned_region(points[0], points[1], math.pi / 2).transformed(scale=1.25)
                if tile and region.size > PERSON_TILE_MAX_SHARE * window.size:
                    # a person larger than the tile: the tile saw a part of someone the whole frame sees (a face
                    # and shoulders), and the pose it gives from that part is a guess
                    continue
                found[tile].append((person.score, region))
        if self.running_mode == 'video':
            self._tile_people.update({tile: people for tile, people in found.items() if tile > 0})
            found = {0: found.get(0, []), **self._tile_people}
        people = [(tile, score, region) for tile, tile_people in found.items() for score, region in tile_people]
        people.sort(key=lambda p: (p[0] > 0, -p[1]))         # the whole frame's first, then best first
        kept: List[Tuple[int, Region]] = []
        for tile, _, region in people:
            if not any(same_person(region, other) for _, other in kept):
                kept.append((tile, region))
        return kept[:self.max_people]

    def _forget_tile_person(self, tile: int, region: Region) -> None:
        """Video mode: a person a tile found in whom the pose sees no wrist is not kept for the next full
        searches (each kept person costs a pose-landmark run, about 8 ms on a 2-core CPU); the tile finds them again
        on its next turn."""
        if tile in self._tile_people:
            self._tile_people[tile] = [p for p in self._tile_people[tile] if p[1] is not region]

    def _person_windows(self, rgb: np.ndarray) -> List[Tuple[int, Region]]:
        """The person detector's windows this full search runs, numbered (0: the whole frame, 1...: the tiles):
        the whole frame, and all the person tiles (image mode) or the next one in turn (video mode)."""
        windows = list(enumerate(self._windows(rgb, self.person_tiles)))
        if self.running_mode == 'image' or len(windows) <= 2:
            return windows
        start = self._person_cursor % (len(windows) - 1)
        self._person_cursor = (start + 1) % (len(windows) - 1)
        return [windows[0], windows[1 + start]]

    @staticmethod
    def _windows(rgb: np.ndarray, tiles: int) -> List[Region]:
        """The whole frame, plus (`tiles` > 1) overlapping square tiles, about `tiles` along the long side (none
        smaller than PERSON_TILE_MIN_SIDE)."""
        height, width = rgb.shape[:2]
        windows = [letterbox_region(0, 0, width, height)]
        if tiles > 1:
            # Square tiles of 1.25 / person_tiles of the long side (at most the short side), overlapping by at
            # least a fifth, as many along each side as it takes to cover it; strips at the edges thinner than
            # TILE_EDGE_LEFT of a tile are left to the whole-frame pass (a single row or column is centred).
            side = min(max(width, height) / tiles * 1.25, min(width, height))
            if side < PERSON_TILE_MIN_SIDE:
                return windows
            rows, cols = (1 + max(0, int(math.ceil((length - side) / (0.8 * side) - TILE_EDGE_LEFT)))
                          for length in (height, width))
            for cy in _tile_centres(height, side, rows):
                for cx in _tile_centres(width, side, cols):
                    windows.append(Region(float(cx), float(cy), float(side)))
        return windows

    def _hand_regions_from_pose(self, rgb: np.ndarray, person: Region):
        """([(side, hand region, wrist px, wrist visibility, pose-only hand or None)] for each visible wrist of one
        person, the person's head box or None, [both wrists px, seen or not]); no head where the pose model sees no
        person. The hand region is the pose's, before `_recrop` (which runs only for wrists no tracked hand holds).
        The pose-only hand is the box the body alone gives a small hand (`_pose_only_hand`). The head box spans the
        pose's 11 face points (nose, eyes, ears, mouth), grown by HEAD_MARGIN of its longer side each way
        (`_on_a_head_out_of_reach`)."""
        tensor, matrix = crop(rgb, person, 256, (0.0, 1.0))
        outputs = self._models['pose_landmark_full'].run(tensor)
        landmarks, person_flag = outputs[0].reshape(39, 5), float(outputs[1].reshape(-1)[0])
        if person_flag < 0.5:
            return [], None, []
        points = to_image(landmarks[:, :2], matrix)
        face = points[:11]
        margin = HEAD_MARGIN * float(np.max(face.max(0) - face.min(0)))
        head = np.concatenate([face.min(0) - margin, face.max(0) + margin])
        arms = [points[i] for i, _, _ in _POSE_HAND_POINTS.values()]
        visibility = _sigmoid(landmarks[:, 3])
        out = []
        for pose_side, (wrist_i, pinky_i, index_i) in _POSE_HAND_POINTS.items():
            if visibility[wrist_i] < _MIN_WRIST_VISIBILITY:
                continue
            wrist, pinky, index = points[wrist_i], points[pinky_i], points[index_i]
            middle = (2.0 * index + pinky) / 3.0
            size = 2.0 * float(np.linalg.norm(middle - wrist))
            if size < 2.0:
                continue
            region = Region(float(middle[0]), float(middle[1]), size,
                            rotation_towards(wrist, middle)).transformed(scale=2.7, shift_y=-0.1)
            side = self._mirror_side(pose_side)
            sure = float(min(visibility[wrist_i], visibility[pinky_i], visibility[index_i]))
            out.append((side, region, wrist, float(visibility[wrist_i]),
                        self._pose_only_hand(rgb, wrist, middle, side, sure,
                                             float(np.linalg.norm(points[_POSE_ELBOWS[pose_side]] - wrist)))))
        return out, head, arms

    def _pose_only_hand(self, rgb: np.ndarray, wrist: np.ndarray, middle: np.ndarray, side: str,
                        visibility: float, forearm: float = 0.0) -> Optional[HandDetection]:
        """A hand the landmark model did not confirm but whose wrist, index and pinky the pose model sees well
        (visibility >= POSE_ONLY_MIN_VISIBILITY), below `pose_only_max_size` px: the body's own box. The landmark
        model's presence falls to zero on clear hands below about 30 px, and on fists, gloves and hands gripping
        a phone or a bat at any size (dev set, test/data/scenes: a raised 134 px fist, unconfirmed in every turned
        region, is found this way; no box of this kind at 40 px or more that survived the merge landed on no hand
        there). Geometry, measured on hands the landmark model confirmed (bus photo and whole scenes; distance
        d = |middle - wrist|, middle = (2 index + pinky) / 3): the tight box is about 1.9 d wide, centred 1.1 d
        from the wrist towards the middle point (d at least POSE_ONLY_FOREARM_FLOOR x the forearm `forearm`, px).
        No landmarks; score = half the visibility, so a confirmed hand wins any merge; the side is the wrist's."""
        d = float(np.linalg.norm(middle - wrist))
        if d < POSE_ONLY_FOREARM_FLOOR * forearm:
            # the pose's index and pinky folded onto its wrist: the hand's size from the forearm instead
            middle = wrist + (middle - wrist) * (POSE_ONLY_FOREARM_FLOOR * forearm / max(d, 1e-6))
            d = POSE_ONLY_FOREARM_FLOOR * forearm
        size = POSE_ONLY_BOX_SCALE * d
        needed = POSE_ONLY_SMALL_MIN_VISIBILITY if size < POSE_ONLY_SMALL_SIZE else POSE_ONLY_MIN_VISIBILITY
        if visibility < needed or not 4.0 <= size < self.pose_only_max_size:
            return None
        centre = wrist + POSE_ONLY_CENTRE_OFFSET * (middle - wrist)
        height, width = rgb.shape[:2]
        box = np.clip(np.concatenate([centre - size / 2, centre + size / 2]), 0.0, [width, height, width, height])
        if box[2] - box[0] < 2.0 or box[3] - box[1] < 2.0:
            return None
        return HandDetection(box_xyxy=box, side=side, side_score=_BODY_SIDE_CONFIDENCE, score=0.5 * visibility,
                             stage=STAGE_BODY)

    def _recrop(self, rgb: np.ndarray, region: Region) -> Region:
        tensor, matrix = crop(rgb, region, 256, (0.0, 1.0))
        points = to_image(self._models['hand_recrop'].run(tensor)[0].reshape(2, 2), matrix)
        refined = aligned_region(points[0], points[1], -math.pi / 2).transformed(shift_y=-0.1)
        # A degenerate answer (both points together) keeps the pose's region.
        return refined if refined.size > 0.25 * region.size else region

    def _palm_regions(self, rgb: np.ndarray, tiles: List[Region], whole_frame: bool = True) -> List[Region]:
        """Palm regions from the full palm model on the letterboxed whole frame (`whole_frame`) and the lite one
        on `tiles`."""
        height, width = rgb.shape[:2]
        palms = []
        windows = [(letterbox_region(0, 0, width, height), 'palm_detection_full')] if whole_frame else []
        for window, model in windows + [(tile, 'palm_detection_lite') for tile in tiles]:
            tensor, matrix = crop(rgb, window, 192, (0.0, 1.0))
            raw_boxes, raw_scores = self._models[model].run(tensor)
            for palm in weighted_nms(decode_ssd(raw_boxes, raw_scores, self._palm_anchors, 192, 7,
                                                self.min_detection_confidence), 0.3, self.num_hands):
                corners = to_image(palm.box.reshape(2, 2), matrix)
                keypoints = to_image(palm.keypoints, matrix)
                palms.append((palm.score, corners.reshape(4), keypoints))
        # Tiles see the same palm more than once: keep the best of overlapping ones.
        palms.sort(key=lambda p: -p[0])
        kept = []
        for score, box, keypoints in palms:
            if all(box_iou(box, other[1]) <= 0.3 for other in kept):
                kept.append((score, box, keypoints))
        regions = []
        for _, box, keypoints in kept:
            w, h = box[2] - box[0], box[3] - box[1]
            angle = rotation_towards(keypoints[0], keypoints[2])
            # shift along the rotated axes in units of the (rectangular) box, then x2.6, square on the long side
            c, s = math.cos(angle), math.sin(angle)
            cx, cy = 0.5 * (box[0] + box[2]) + s * 0.5 * h, 0.5 * (box[1] + box[3]) - c * 0.5 * h
            regions.append(Region(cx, cy, 2.6 * max(w, h), angle))
        return regions

    def _recheck(self, rgb: np.ndarray, hand: HandDetection, side: Optional['_SideEvidence'], mirror_view: bool,
                 screen: Optional[float] = None) -> Tuple[Optional[HandDetection], bool]:
        """(a tracked or lost hand confirmed again in the region of its last landmarks, with its side kept
        (`_keep_side`, `side`: its evidence), or None; whether the full model was asked). The tracking model looks
        first; where it is the lite one and does not confirm the hand, the full model gives a second opinion (the
        lite model's presence runs lower on small or half-hidden hands: 0.55 where the full model gives 0.97),
        always (`screen` None), or only where the lite model's presence reaches `screen` (lost hands, LOST_SCREEN).
        `mirror_view`: the hand is re-checked as the mirror image shows it (`_confirm`)."""
        region = tracking_region(hand.landmarks_2d)
        threshold = self.min_tracking_confidence
        first = self._confirm(rgb, region, STAGE_TRACKED, threshold if screen is None else min(screen, threshold),
                              self._tracking_model, mirror_view)
        confirmed, asked_full = (first if first is not None and first.score >= threshold else None), False
        if confirmed is None and self._tracking_model != 'hand_landmark_full' and (screen is None or first is not None):
            confirmed, asked_full = self._confirm(rgb, region, STAGE_TRACKED, threshold, mirror_view=mirror_view), True
        if confirmed is None:
            return None, asked_full
        if mirror_view:
            self._frame_mirror_views[id(confirmed)] = (confirmed, True)
        return self._keep_side(confirmed, side), asked_full

    def _on_a_head_out_of_reach(self, hand: HandDetection) -> bool:
        """Whether a palm-stage hand's box centre lies on a body's head (the last full search's poses; a frame of
        another size resets them) with no body's wrist, seen or not, within HEAD_REACH x the hand's size of it: the
        palm detector and the landmark model take an ear or the back of a head for a fist (dev set, posetrack18_003418:
        an ear at presence 0.92), whereas a hand on a face has its arm's wrist next to it."""
        heads, arms = self._heads
        box = hand.box_xyxy
        centre = np.array([0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])])
        if not any(head[0] <= centre[0] <= head[2] and head[1] <= centre[1] <= head[3] for head in heads):
            return False
        reach = HEAD_REACH * max(box[2] - box[0], box[3] - box[1])
        return all(float(np.linalg.norm(wrist - centre)) > reach for wrist in arms)

    # ------------------------------------------------------------------ the hand landmark model
    def _confirm(self, rgb: np.ndarray, region: Region, stage: str, threshold: float,
                 model: str = 'hand_landmark_full', mirror_view: bool = False) -> Optional[HandDetection]:
        """The hand in `region` when the landmark model's presence reaches `threshold`, else None. `mirror_view`:
        the model sees the region's crop flipped left to right (the hand as the mirror image shows it; video
        mode's hands found on the mirror image, `_mirror_full_search`); landmarks, box and side come back in this
        frame's pixels and as the subject's own."""
        if region.size < 4.0:
            return None
        tensor, matrix = crop(rgb, region, 224, (0.0, 1.0))
        if mirror_view:
            # crop pixel x of the flipped crop is 223 - x of the crop (pixel centres at whole numbers)
            tensor = np.ascontiguousarray(tensor[:, :, ::-1])
            matrix = matrix @ np.array([[-1.0, 0.0, 223.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        landmarks, presence, handedness, world = self._models[model].run(tensor)
        presence = float(presence.reshape(-1)[0])
        if presence < threshold:
            return None
        height, width = rgb.shape[:2]
        points = to_image(landmarks.reshape(21, 3)[:, :2], matrix)
        c, s = math.cos(region.angle), math.sin(region.angle)
        world = world.reshape(21, 3).astype(np.float64)
        if mirror_view:
            world[:, 0] = -world[:, 0]                                  # the flipped crop's x axis back
        world[:, :2] = world[:, :2] @ np.array([[c, s], [-s, c]])      # into the image's axes (rotate by angle)
        # The model's score is the probability of 'Right' for the image as given (checked against the
        # Tasks API's labels on real photos, test_detection_search.py); a flipped crop swaps it.
        p_right = float(handedness.reshape(-1)[0])
        if self.mirrored != mirror_view:
            p_right = 1.0 - p_right
        side = 'right' if p_right >= 0.5 else 'left'
        box = np.clip(np.array([*points.min(0), *points.max(0)]), 0.0, [width, height, width, height])
        if box[2] - box[0] < 1.0 or box[3] - box[1] < 1.0:
            return None
        return HandDetection(box_xyxy=box, side=side, side_score=max(p_right, 1.0 - p_right), score=presence,
                             landmarks_2d=points, landmarks_world=world, stage=stage)

    # ------------------------------------------------------------------ sides
    def _side_from_wrists(self, hand: HandDetection, wrists) -> HandDetection:
        """A new hand's side: the hand model's, with the side of a body's wrist at it (`_wrist_side`) as a second
        opinion (`combine_sides`); video mode keeps the evidence for the frames that track it (`_keep_side`)."""
        if hand.landmarks_2d is None:
            return hand
        return self._side_evidence(hand, _SideEvidence(_model_logit(hand), 1, _wrist_side(hand, wrists)))

    def _keep_side(self, hand: HandDetection, before: Optional['_SideEvidence']) -> HandDetection:
        """A tracked hand confirmed again (`hand`, the hand model's side of this frame): its side from the hand
        model's log-odds averaged over its last SIDE_MEMORY_FRAMES frames, with the body's wrist last seen at it
        (`before`: the evidence the hand had on the last frame, None for none)."""
        logit = _model_logit(hand)
        if before is None:
            return self._side_evidence(hand, _SideEvidence(logit, 1, None))
        frames = min(before.frames + 1, SIDE_MEMORY_FRAMES)
        mean = before.model_logit + (logit - before.model_logit) / frames
        return self._side_evidence(hand, _SideEvidence(mean, frames, before.wrist_side))

    def _side_evidence(self, hand: HandDetection, evidence: '_SideEvidence') -> HandDetection:
        """Sets `hand`'s side and side_score from `evidence`, and records the evidence for the next frame."""
        self._frame_sides[id(hand)] = (hand, evidence)
        p_right = 1.0 / (1.0 + math.exp(-evidence.model_logit))
        if evidence.wrist_side is not None:
            p_right = combine_sides(p_right, evidence.wrist_side)
        hand.side = 'right' if p_right >= 0.5 else 'left'
        hand.side_score = max(p_right, 1.0 - p_right)
        return hand

    # ------------------------------------------------------------------ helpers
    def _mirror_side(self, side: str) -> str:
        # Pose landmarks name the subject's own side in a normal image; a mirrored image swaps them.
        return ('left' if side == 'right' else 'right') if self.mirrored else side

    def _to_rgb(self, image: np.ndarray) -> np.ndarray:
        from hamer_ros.detection.hand_detector import detector_input_rgb

        return detector_input_rgb(image, self.rgb_input)


def tracking_region(landmarks_2d: np.ndarray) -> Region:
    """Next frame's region of a hand from its 21 landmarks (MediaPipe's hand_landmarks_to_rect_calculator.cc and
    hand_landmark_landmarks_to_roi.pbtxt)."""
    points = np.asarray(landmarks_2d, dtype=np.float64)[_TRACKING_LANDMARKS]
    full = np.asarray(landmarks_2d, dtype=np.float64)
    towards = 0.5 * (0.5 * (full[6] + full[14]) + full[10])
    angle = rotation_towards(full[0], towards)
    centre = 0.5 * (points.min(0) + points.max(0))
    c, s = math.cos(-angle), math.sin(-angle)
    local = (points - centre) @ np.array([[c, s], [-s, c]])
    lo, hi = local.min(0), local.max(0)
    mid = 0.5 * (lo + hi)
    c2, s2 = math.cos(angle), math.sin(angle)
    cx = centre[0] + mid[0] * c2 - mid[1] * s2
    cy = centre[1] + mid[0] * s2 + mid[1] * c2
    w, h = hi - lo
    # RectTransformation on the rectangle: shift 0.1 of its height upwards, x2, square on the long side.
    cx, cy = cx + s2 * 0.1 * h, cy - c2 * 0.1 * h
    return Region(float(cx), float(cy), 2.0 * float(max(w, h)), angle)


def palm_windows(width: int, height: int, min_hand: float) -> List[Region]:
    """The zoomed palm search's windows for a width x height frame: the whole frame (letterboxed), then the
    pyramid's levels, finest first. Level k looks for hands of min_hand x 2^k px up to twice that: its square
    tiles are PALM_TILE_HAND_RATIO x min_hand x 2^k wide (at most the short side) and overlap by PALM_TILE_OVERLAP
    x min_hand x 2^k; levels stop where a tile would reach nine tenths of the long side (the whole frame sees
    those hands), where the level's smallest hand no longer fits the short side, and after the first level whose
    tiles the short side clips (a coarser one would run the same tiles again). So a long, thin frame (a 3000x5
    strip: 4800 tiles before) has a few levels at most. min_hand 0: the whole frame only."""
    windows = [letterbox_region(0, 0, width, height)]
    if min_hand <= 0:
        return windows
    hand, short = float(min_hand), float(min(width, height))
    while PALM_TILE_HAND_RATIO * hand < 0.9 * max(width, height) and hand <= short:
        side = min(PALM_TILE_HAND_RATIO * hand, short)
        overlap = min(PALM_TILE_OVERLAP * hand, 0.5 * side)
        for cy in _covering_centres(height, side, overlap):
            for cx in _covering_centres(width, side, overlap):
                windows.append(Region(float(cx), float(cy), side))
        if side >= short:
            break
        hand *= 2.0
    return windows


def _covering_centres(length: float, side: float, overlap: float) -> List[float]:
    """Centres of the fewest tiles of `side` that cover `length` with neighbours overlapping by >= `overlap`."""
    if length <= side:
        return [length / 2.0]
    count = int(math.ceil((length - side) / (side - overlap))) + 1
    return list(np.linspace(side / 2.0, length - side / 2.0, count))


def _tile_centres(length: float, side: float, count: int) -> np.ndarray:
    if count == 1:
        return np.array([length / 2])
    return np.linspace(side / 2, length - side / 2, count)


def same_person(a: Region, b: Region) -> bool:
    """Two person regions (centre = mid-hip, side from the body's size) are one person seen twice (by two
    overlapping tiles) when their hips lie within a fifth of the smaller region's side and their sizes agree
    within a factor 1.5. Not box overlap: the regions are 2.5 body sizes wide, so two people side by side (one
    holding a cup to the other's mouth, a crowd) overlap by far more than the usual NMS threshold."""
    small, large = sorted((a.size, b.size))
    return math.hypot(a.cx - b.cx, a.cy - b.cy) < PERSON_SAME_DISTANCE * small and large < 1.5 * small


def region_box(region: Region, scale: float = 1.0) -> np.ndarray:
    return Region(region.cx, region.cy, region.size * scale, region.angle).box()


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """One hand: IoU above 0.3, or the smaller box lies mostly (60 %) inside the larger."""
    if box_iou(a, b) > 0.3:
        return True
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return smaller > 0 and ix * iy > 0.6 * smaller


def _flipped(hand: HandDetection, width: int) -> HandDetection:
    """A hand found in a frame `width` px wide flipped left to right (`image[:, ::-1]`: pixel x there is pixel
    width - 1 - x here, pixel centres at whole numbers as in `crop`), in the unflipped frame's pixels: box,
    landmarks, and world landmarks reflected in x (the image's axis)."""
    box = _mirror_box(hand.box_xyxy, width, clip=True)
    points = None if hand.landmarks_2d is None else _mirror_points(hand.landmarks_2d, width)
    world = None
    if hand.landmarks_world is not None:
        world = hand.landmarks_world.copy()
        world[:, 0] = -world[:, 0]
    return dataclasses.replace(hand, box_xyxy=box, landmarks_2d=points, landmarks_world=world)


def _mirror_points(points: np.ndarray, width: int) -> np.ndarray:
    """Pixel points (..., 2) of a frame `width` px wide in its mirror image (`image[:, ::-1]`) and back: x becomes
    width - 1 - x (pixel centres at whole numbers, as in `crop`)."""
    out = np.array(points, dtype=np.float64)
    out[..., 0] = width - 1.0 - out[..., 0]
    return out


def _mirror_box(box: np.ndarray, width: int, clip: bool = False) -> np.ndarray:
    """An x0, y0, x1, y1 box in the mirror image (`_mirror_points` of its corners, x0 <= x1 kept); `clip`: x
    within [0, width]."""
    out = np.array(box, dtype=np.float64)
    out[[0, 2]] = width - 1.0 - out[[2, 0]]
    if clip:
        out[[0, 2]] = np.clip(out[[0, 2]], 0.0, width)
    return out


def merge_hands(hands: List[HandDetection], limit: int) -> List[HandDetection]:
    """One detection per hand: among overlapping boxes (IoU > 0.3 or mostly contained) the highest presence
    score wins; a pose-only hand (no landmarks) also gives way to a confirmed hand next to it
    (`_pose_box_at_hand`); at most `limit`, best first."""
    kept: List[HandDetection] = []
    for hand in sorted(hands, key=lambda h: (h.landmarks_2d is None, -h.score)):
        if not any(_overlaps(hand.box_xyxy, other.box_xyxy)
                   or (hand.landmarks_2d is None and other.landmarks_2d is not None
                       and _pose_box_at_hand(hand.box_xyxy, other.box_xyxy)) for other in kept):
            kept.append(hand)
    kept.sort(key=lambda h: -h.score)
    return kept[:limit]


def _pose_box_at_hand(pose_box: np.ndarray, hand_box: np.ndarray) -> bool:
    """Whether a pose-only box's centre lies within POSE_ONLY_NEAR_HAND of a confirmed hand's size from that hand's
    box: the same hand, placed by a pose that is a hand size or so off (a person seen twice, by the whole frame
    and a tile, with two poses; dev set, panoptic_nzsl: a pose-only box just above the confirmed hand)."""
    margin = POSE_ONLY_NEAR_HAND * max(hand_box[2] - hand_box[0], hand_box[3] - hand_box[1])
    cx, cy = 0.5 * (pose_box[0] + pose_box[2]), 0.5 * (pose_box[1] + pose_box[3])
    return (hand_box[0] - margin <= cx <= hand_box[2] + margin) and (hand_box[1] - margin <= cy <= hand_box[3] + margin)


def combine_sides(p_right: float, wrist_side: str) -> float:
    """P(right) from the hand model's P(right) and the side of the body's wrist at the hand (log-odds added)."""
    wrist = _BODY_SIDE_CONFIDENCE if wrist_side == 'right' else 1.0 - _BODY_SIDE_CONFIDENCE
    return 1.0 / (1.0 + math.exp(-(_logit(p_right) + _logit(wrist))))


def _logit(p: float) -> float:
    """log(p / (1 - p)), p clipped to [1e-6, 1 - 1e-6]."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class _SideEvidence(NamedTuple):
    """What a hand's side rests on: the hand model's log-odds of 'right' (the mean over `frames` frames), and the
    side of the body's wrist at the hand (None: none)."""
    model_logit: float
    frames: int
    wrist_side: Optional[str]


def _evidence(table: Dict[int, Tuple[HandDetection, _SideEvidence]], hand: HandDetection
              ) -> Optional[_SideEvidence]:
    """The side evidence `table` holds for this very hand (not another object that came to have its id), or None."""
    entry = table.get(id(hand))
    return entry[1] if entry is not None and entry[0] is hand else None


def _model_logit(hand: HandDetection) -> float:
    """The log-odds of 'right' of a hand as the hand model gave it."""
    return _logit(hand.side_score if hand.side == 'right' else 1.0 - hand.side_score)


def _wrist_side(hand: HandDetection, wrists) -> Optional[str]:
    """The side of the body's wrist nearest a hand's wrist landmark when it lies within half the hand's size of
    it (`_at_wrist`), else None."""
    if not wrists or hand.landmarks_2d is None:
        return None
    side, wrist = min(((side, wrist) for side, wrist, _ in wrists),
                      key=lambda w: (float(np.linalg.norm(hand.landmarks_2d[0] - w[1])), w[0]))
    return side if _at_wrist(hand, wrist) else None


def _at_wrist(hand: HandDetection, wrist: np.ndarray) -> bool:
    """Whether a body's `wrist` (px) is this hand's: within half the hand's size of its wrist landmark."""
    if hand.landmarks_2d is None:
        return False
    size = max(hand.box_xyxy[2] - hand.box_xyxy[0], hand.box_xyxy[3] - hand.box_xyxy[1])
    return float(np.linalg.norm(hand.landmarks_2d[0] - wrist)) <= 0.5 * size
