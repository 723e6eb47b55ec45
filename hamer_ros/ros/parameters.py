"""The node's parameters, in one table: name, type (that of the default), default, range or choices, read-only,
description, and the short note written beside it in config/hamer.yaml.

Everything else follows from this table: the node declares its parameters from it (`hamer_ros.ros.node`, with
`ParameterDescriptor`s), and `scripts/generate_parameter_docs.py` writes config/hamer.yaml and the README's
parameter table from it (test/test_parameters.py fails when the committed files differ from what it writes).
This module imports no rclpy, so the script and the tests run without a ROS graph.

Read-only parameters are fixed when the node is configured (they decide what is loaded or subscribed; a new value
takes effect on the next configure, see the README's "Lifecycle"); the others may be changed at any time with
`ros2 param set`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from hamer_ros.detection.external_boxes import MODES as EXTERNAL_BOX_MODES
from hamer_ros.detection.hand_detector import CONFIDENCE_RANGES
from hamer_ros.hamer.model import PERSPECTIVE_CORRECTIONS, PRECISIONS
from hamer_ros.ros.image_conversion import DEFAULT_MAX_PIXELS
from hamer_ros.ros.tf_frames import TF_FRAME_SETS, frame_prefix_for_tf


@dataclass(frozen=True)
class Param:
    """One node parameter. `low`/`high`: the accepted range (both or neither); `choices`: the accepted strings."""
    name: str
    default: Any
    description: str
    read_only: bool = False
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Tuple[str, ...] = ()
    note: str = ''          # the comment beside it in config/hamer.yaml; empty: none

    @property
    def type(self) -> type:
        return type(self.default)

    def range_text(self) -> str:
        """Range or choices as the README shows them."""
        if self.choices:
            return ' \\| '.join(self.choices)
        if self.low is not None:
            return f'{_number(self.low)}..{_number(self.high)}'
        return ''


def _number(value: float) -> str:
    return f'{value:g}' if isinstance(value, float) else str(value)


# Comments on the groups in config/hamer.yaml (the part of the name before the dot).
GROUP_NOTES = {
    'external_boxes': 'hand boxes of another detector on hands/boxes_in (hamer_ros/HandBoxArray)',
    'markers': 'RViz markers on hands/markers',
}

_INT_MAX = 2 ** 31 - 1

PARAMETERS: Tuple[Param, ...] = (
    Param('autostart', True,
          'configure and activate the node at start-up (a plain `ros2 run`); false: the node waits unconfigured '
          'for lifecycle transitions (the launch file drives it then, launch argument `autostart`)',
          read_only=True, note='configure + activate at start-up; false: wait for lifecycle transitions'),
    Param('model', 'hamer',
          '`hamer`: the HaMeR weights in `data_dir`. `small_random`: a small network with random weights and a '
          'synthetic MANO, for tests and benchmarks only (its meshes mean nothing)',
          read_only=True, choices=('hamer', 'small_random'),
          note='hamer: HaMeR weights from data_dir. small_random: random small network, tests/benchmarks only'),
    Param('data_dir', '',
          'HaMeR data folder (layout of the official `_DATA`: `hamer_ckpts/`, `data/mano/`); empty: '
          '`$HAMER_ROS_DATA_DIR`, else `~/.local/share/hamer_ros/_DATA`',
          read_only=True,
          note='HaMeR data folder (official _DATA layout). Empty: $HAMER_ROS_DATA_DIR or ~/.local/share/hamer_ros/_DATA'),
    Param('device', 'auto', 'compute device for HaMeR (`auto`: CUDA when available)',
          read_only=True, choices=('auto', 'cpu', 'cuda')),
    Param('precision', 'fp32',
          'HaMeR precision: fp32 matches the official model; fp16: CUDA autocast; bf16: CUDA autocast, or on '
          'CPUs with AMX or AVX512_BF16 the network weights in bf16 (faster, not exact: vertices move by about a '
          'millimetre); int8: CPU only, part of the ViT quantised (faster, not exact; opt-in). When to pick '
          'which: README, "CPU precisions". A precision the device cannot run (int8 with `device` cuda, or auto '
          'on a machine with CUDA; fp16 without CUDA; bf16 on a CPU without native bf16) is logged as an error '
          'and fp32 is used',
          read_only=True, choices=tuple(PRECISIONS),
          note='fp16: CUDA only; bf16: CUDA, or CPUs with AMX/AVX512_BF16; int8: CPU only; bf16/int8 not exact'),
    Param('threads', 0, 'CPU threads for PyTorch; 0: its default', read_only=True, low=0, high=256),
    Param('allow_cpu_fallback', True,
          'CUDA out of memory even for one hand (after trying smaller batches): move HaMeR to the CPU in fp32 and '
          'go on, much slower (logged, `device` in the diagnostics changes); false: those frames fail with an error',
          read_only=True, note='CUDA out of memory even for one hand: go on on the CPU (slow); false: frames fail'),
    Param('compile', False,
          'wrap HaMeR in torch.compile (CUDA graphs on CUDA); the first frame with 1, 2, 3-4, ... hands (batches '
          'are padded to powers of two) takes seconds to minutes (compilation), later ones may run faster',
          read_only=True, note='torch.compile HaMeR: slow first frames, maybe faster later'),
    Param('overlap_detection', 'auto',
          'detect hands in frame N+1 while HaMeR runs on frame N (two threads); `auto`: on when HaMeR runs on '
          'CUDA (on a CPU both stages share the same cores)',
          read_only=True, choices=('auto', 'on', 'off')),
    Param('image_transport', 'raw',
          '`raw`: sensor_msgs/Image on `image`; `compressed`: sensor_msgs/CompressedImage on `image` + '
          '`/compressed` (as image_transport names it)',
          read_only=True, choices=('raw', 'compressed')),
    Param('max_image_pixels', DEFAULT_MAX_PIXELS,
          'larger images are refused with a warning (pixels; the default is 3840 x 2160)', low=1, high=_INT_MAX),
    Param('mirrored', False, 'the image is mirrored (selfie view): the detector swaps the hand sides back',
          read_only=True),
    Param('detector.model_path', '',
          'a MediaPipe `hand_landmarker.task` of your own: the palm-only detector runs with it; empty: the hand '
          'search (or, with `detector.search` false, the project\'s own bundle), provisioned at set-up time '
          '(`python -m hamer_ros check --provision`); the node never fetches models',
          read_only=True, note='a hand_landmarker.task of your own (palm-only detector); empty: the hand search'),
    Param('detector.running_mode', 'video',
          '`video`: MediaPipe follows hands between frames (faster); `image`: every frame on its own',
          read_only=True, choices=('video', 'image')),
    Param('detector.num_hands', 8, 'most hands reported per image (a room holds several people)',
          read_only=True, low=1, high=32),
    Param('detector.search', True,
          'the multi-stage hand search (body-guided, zoomed palm, tracked); needs LiteRT (`ai-edge-litert`), '
          'without it the node warns and uses the palm-only detector. false: MediaPipe\'s palm-only hand '
          'landmarker (close-up hands)',
          read_only=True, note='multi-stage hand search (needs LiteRT; without it: palm-only, with a warning)'),
    Param('detector.body_stage', True,
          'search: find hands from people\'s wrists (BlazePose person detector + pose landmarks)', read_only=True),
    Param('detector.palm_min_hand_size', 24.0,
          'search: smallest hand (px) the zoomed palm search looks for; its finest tiles are 8x this, each coarser '
          'level doubles them (smaller values cost about 4x the tiles per halving; 0: the whole frame only; '
          'otherwise at least 8)',
          read_only=True, low=0.0, high=4096.0),
    Param('detector.palm_tiles_per_frame', 1,
          'search, video mode: zoomed palm tiles each frame runs, in turn, full searches and tracked frames alike '
          '(the whole pyramid is covered about every tiles / this frames: 19 at 640x480; a frame that confirms '
          'what the last tile found runs none); 0: all of them on every full search and none in between (image '
          'mode always runs all)', read_only=True, low=0, high=1000),
    Param('detector.person_tiles', 3,
          'search: person detector tiles per image side, besides the whole frame (1: whole frame only; more '
          'finds people far away; one detector run per tile: 6 tiles at 640x480 with 3); video mode runs one '
          'tile per full search, in turn (image mode all)', read_only=True, low=1, high=6),
    Param('detector.max_people', 4, 'search: most people per frame the body stage follows',
          read_only=True, low=1, high=32),
    Param('detector.full_search_period', 10,
          'search, video mode: frames between full searches while every hand stays tracked (a new hand is found '
          'within this many frames; a hand from the body alone, with no landmarks to re-check, is held at most '
          '10 frames)', read_only=True, low=1, high=1000),
    Param('detector.mirror_pass', True,
          'search: the body stage also looks at the image flipped left to right and adds the hands it confirms '
          'there (the models are not mirror-symmetric); video mode: every other full search, at the same cost, '
          'and such hands are tracked on the mirror image; image mode: a second pass on every frame, about the '
          'body stage\'s time again', read_only=True),
    Param('detector.min_detection_confidence', 0.5, 'MediaPipe palm detection threshold',
          low=CONFIDENCE_RANGES['min_detection_confidence'][0],
          high=CONFIDENCE_RANGES['min_detection_confidence'][1]),
    Param('detector.min_presence_confidence', 0.5, 'MediaPipe hand presence threshold',
          low=CONFIDENCE_RANGES['min_presence_confidence'][0], high=CONFIDENCE_RANGES['min_presence_confidence'][1]),
    Param('detector.min_tracking_confidence', 0.5,
          'MediaPipe landmark tracking threshold (video mode; MediaPipe aborts the process at 0, hence 0.01 at '
          'least)',
          low=CONFIDENCE_RANGES['min_tracking_confidence'][0], high=CONFIDENCE_RANGES['min_tracking_confidence'][1]),
    Param('external_boxes.mode', 'ignore',
          'hand boxes of another detector on `hands/boxes_in` (hamer_ros/HandBoxArray): `ignore`: the own search '
          'only (the topic is not read); `only`: those boxes only (MediaPipe is not run; an image without boxes is '
          'skipped; needs the HaMeR weights, as such boxes have no landmarks); `both`: the own search plus those '
          'boxes, merged without duplicates',
          read_only=True, choices=tuple(EXTERNAL_BOX_MODES),
          note='ignore: own search only | only: those boxes only | both: merged with the own search'),
    Param('external_boxes.stamp_tolerance', 0.0,
          'largest difference (s) between an image stamp and a HandBoxArray stamp that still pairs them; 0: equal '
          'stamps only', low=0.0, high=10.0),
    Param('external_boxes.wait', 0.2,
          'how long (s) an image waits for its boxes when they have not come yet (a detector answers after the '
          'image); in mode `both` not while the boxes are timed out', low=0.0, high=10.0),
    Param('external_boxes.timeout', 2.0,
          'no HandBoxArray for this long (s): a warning, and WARN in `/diagnostics`', low=0.1, high=3600.0),
    Param('external_boxes.merge_iou', 0.5,
          'mode `both`: an own and an external box overlapping at least this much (intersection over union) are '
          'one hand; the higher score keeps its box', low=0.01, high=1.0),
    Param('tracking.enabled', True, 'give hands stable track ids and stabilise their side labels', read_only=True),
    Param('tracking.min_iou', 0.1, 'a detection overlapping a track at least this much may continue it',
          read_only=True, low=0.0, high=1.0),
    Param('tracking.max_center_distance', 1.0,
          '...or one whose centre is at most this many track-box diagonals away (fast hands); half that for a track '
          'missed in the last frame (a hidden hand comes back where it was)',
          read_only=True, low=0.0, high=100.0),
    Param('tracking.flip_after_frames', 3,
          'a track\'s side changes only after this many consecutive contrary frames', read_only=True, low=1, high=1000),
    Param('tracking.min_flip_score', 0.6,
          'contrary side labels below this confidence neither count towards a flip nor break the run',
          read_only=True, low=0.0, high=1.0),
    Param('tracking.max_missed_frames', 30,
          'a track unseen for more frames than this is dropped (the hand search re-checks a lost hand where it was '
          'for 30 frames, so a hand hidden for a moment comes back with its id)', read_only=True, low=0, high=1000),
    Param('tracking.max_age_s', 3.0,
          '...or unseen for longer than this (s, by image stamps) and missed in a processed frame (a hand seen in '
          'the last processed frame keeps its id however slow the device)', read_only=True, low=0.001, high=3600.0),
    Param('publish.mesh', True, 'publish `hands/mano` (HandMeshArray)'),
    Param('publish.markers', True, 'publish `hands/markers` (RViz MarkerArray)'),
    Param('publish.tf', True, 'broadcast TF frames of the hands (`publish.tf_frames` says which)'),
    Param('publish.overlay', False, 'publish `hands/overlay`: the image with the meshes drawn (costs CPU)'),
    Param('publish.tf_frames', 'joints',
          '`joints`: 21 frames per hand; `wrist`: the wrist frame only (busy scenes). Landmarks-only hands have no '
          'orientation: their frames end in `_position` (camera axes)', choices=tuple(TF_FRAME_SETS),
          note='joints: 21 frames per hand; wrist: the wrist only (busy scenes)'),
    Param('frame_prefix', '{namespace}hand_',
          'TF frame names: `<frame_prefix><side>_<joint>`, e.g. `cam1/hand_right_wrist`; `{namespace}` is the '
          'node\'s namespace + `/` (nothing in the root namespace), so nodes of two cameras do not collide; no '
          'spaces; a leading `/` (refused by tf2) is dropped with a warning. A second hand of one side: '
          '`<frame_prefix><side>_<track id>_<joint>`',
          note='TF frames <frame_prefix><side>_<joint>, e.g. cam1/hand_right_wrist; {namespace}: the node\'s '
               'namespace + /'),
    Param('perspective_correction', 'auto',
          '`on`: turn each hand by the rotation taking the optical axis to the ray through its crop centre (right '
          'for real cameras: up to ~30 deg at the image edge); `off`: the official placement (translation only; '
          'the official numbers); `auto`: on with a CameraInfo, off with HaMeR\'s default camera',
          read_only=True, choices=tuple(PERSPECTIVE_CORRECTIONS)),
    Param('image_rectified', True,
          'the image is rectified (image_proc\'s `image_rect`): intrinsics from the CameraInfo\'s P. false: a raw '
          'image, intrinsics from K and the lens distortion D is ignored (warned)'),
    Param('markers.color_left', [0.96, 0.69, 0.51], 'RGB in [0, 1] of left hands in RViz'),
    Param('markers.color_right', [0.65, 0.74, 0.86], 'RGB in [0, 1] of right hands in RViz'),
    Param('markers.alpha', 1.0, 'mesh opacity in RViz', low=0.0, high=1.0),
    Param('markers.joint_diameter', 0.008, 'joint sphere diameter (m)', low=0.0, high=0.1),
    Param('markers.bone_width', 0.004, 'skeleton line width (m)', low=0.0, high=0.1),
    Param('qos_depth', 5, 'queue depth of the reliable outputs (`hands/mano`, `hands/markers`, `hands/overlay`)',
          read_only=True, low=1, high=1000),
    Param('diagnostics_period', 1.0, 'seconds between `/diagnostics` messages', read_only=True, low=0.1, high=60.0),
)

BY_NAME = {param.name: param for param in PARAMETERS}


def defaults() -> dict:
    """name -> default of every parameter."""
    return {param.name: param.default for param in PARAMETERS}


def check_value(name: str, value) -> Optional[str]:
    """Why a parameter value is invalid beyond its type and range (None when it is fine); rclpy checks the type
    and the range itself."""
    param = BY_NAME.get(name)
    if param is None:
        return None
    if param.choices and value not in param.choices:
        return f'{name} must be one of {", ".join(param.choices)}, got {value!r}'
    if name.startswith('markers.color_') and (len(value) != 3 or not all(0.0 <= v <= 1.0 for v in value)):
        return f'{name} must be three numbers in [0, 1] (RGB), got {list(value)}'
    if name == 'frame_prefix':
        return _frame_prefix_problem(value)
    return None


def _frame_prefix_problem(value: str) -> Optional[str]:
    if any(c.isspace() for c in value):
        return f'frame_prefix must not contain spaces, got {value!r}'
    placeholders_removed = value.replace('{namespace}', '')
    if '{' in placeholders_removed or '}' in placeholders_removed:
        return f'frame_prefix may only use the placeholder {{namespace}}, got {value!r}'
    prefix, problem = frame_prefix_for_tf(value)
    return problem if prefix is None else None


def groups(params: Sequence[Param] = PARAMETERS):
    """(group or '', [params]) in table order; a group's parameters must be contiguous in the table (the YAML
    nests them), which `test_parameters` checks."""
    result = []
    for param in params:
        group = param.name.split('.')[0] if '.' in param.name else ''
        if result and result[-1][0] == group and group:
            result[-1][1].append(param)
        else:
            result.append((group, [param]))
    return result


# ---------------------------------------------------------------------------------- generated documents

README_BEGIN = '<!-- parameter table: generated by scripts/generate_parameter_docs.py from hamer_ros/ros/parameters.py -->'
README_END = '<!-- end of the generated parameter table -->'
_YAML_HEADER = """\
# Defaults of the hamer_ros node (hamer_node), generated from hamer_ros/ros/parameters.py by
# scripts/generate_parameter_docs.py: edit the table there, not this file. README.md ("The node") describes them.
# Load with `--ros-args --params-file hamer.yaml` (the launch file does by default). `/**:` applies to the
# node whatever its name and namespace. (ro) = read-only: fixed when the node is configured.
/**:
  ros__parameters:
"""
_WIDTH = 118


def _yaml_value(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return '[' + ', '.join(_yaml_value(v) for v in value) + ']'
    import yaml

    try:
        plain = bool(value) and yaml.safe_load(value) == value
    except yaml.YAMLError:
        plain = False
    if plain:
        return value
    return "'" + value.replace("'", "''") + "'"


def _comment_lines(text: str, indent: str) -> list:
    import textwrap

    return textwrap.wrap(text, _WIDTH - len(indent) - 2, initial_indent=f'{indent}# ',
                         subsequent_indent=f'{indent}# ')


def render_yaml() -> str:
    """config/hamer.yaml: every parameter with its default, grouped as the names are, with a comment each."""
    lines = [_YAML_HEADER.rstrip('\n')]
    for group, params in groups():
        indent = '    '
        if group:
            note = GROUP_NOTES.get(group)
            lines.append(f'{indent}{group}:' + (f'  # {note}' if note else ''))
            indent += '  '
        for param in params:
            key = param.name.split('.', 1)[1] if group else param.name
            note = (param.note or param.description).replace('`', '')
            note = ('(ro) ' if param.read_only else '') + note
            line = f'{indent}{key}: {_yaml_value(param.default)}'
            if len(line) + 4 + len(note) <= _WIDTH:
                lines.append(f'{line}  # {note}')
            else:
                lines.extend(_comment_lines(note, indent))
                lines.append(line)
    return '\n'.join(lines) + '\n'


def _readme_default(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str) and not value:
        return "''"
    return str(value)


def render_readme_table() -> str:
    """The README's parameter table, between its two marker lines."""
    rows = [README_BEGIN, '| parameter | default | range / choices | read-only | meaning |', '|---|---|---|---|---|']
    for param in PARAMETERS:
        description = param.description.replace('|', '\\|')
        rows.append(f'| `{param.name}` | `{_readme_default(param.default)}` | {param.range_text()} | '
                    f'{"yes" if param.read_only else ""} | {description} |')
    rows.append(README_END)
    return '\n'.join(rows) + '\n'


def replace_readme_table(readme: str) -> str:
    """`readme` with its generated table replaced by the current one (the marker lines must be there)."""
    start, end = readme.index(README_BEGIN), readme.index(README_END) + len(README_END) + 1
    return readme[:start] + render_readme_table() + readme[end:]
