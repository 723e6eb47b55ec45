"""The node's model parameters (precision, allow_cpu_fallback, compile), without starting the node or its worker.

Declared on a plain rclpy node with the node's own declaration code, so descriptors, read-only flags and the
start-up validation are rclpy's real behaviour; the parameter -> HamerModel translation loads the small model.
"""
from __future__ import annotations

import re

import pytest

rclpy = pytest.importorskip('rclpy', reason='needs the colcon-built environment: . scripts/env.sh')

from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.exceptions import InvalidParameterTypeException  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from hamer_ros.hamer.model import HamerModel  # noqa: E402
from hamer_ros.ros.frame_processor import model_options, usable_precision  # noqa: E402
from hamer_ros.ros.node import HamerNode  # noqa: E402
from hamer_ros.ros.parameters import defaults  # noqa: E402


@pytest.fixture
def declare():
    """declare(overrides) -> a plain node with the hamer_node parameters declared as HamerNode declares them."""
    context = Context()
    rclpy.init(context=context)
    nodes = []

    def make(overrides=None):
        node = rclpy.create_node('hamer_parameters_probe', context=context, start_parameter_services=False,
                                 parameter_overrides=[Parameter(k, value=v) for k, v in (overrides or {}).items()])
        nodes.append(node)
        HamerNode._declare_parameters(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)


def test_model_parameters_are_described_read_only_with_their_defaults(declare):
    node = declare()
    expected = {'precision': (ParameterType.PARAMETER_STRING, 'fp32'),
                'allow_cpu_fallback': (ParameterType.PARAMETER_BOOL, True),
                'compile': (ParameterType.PARAMETER_BOOL, False)}
    for name, (kind, default) in expected.items():
        descriptor = node.describe_parameter(name)
        assert (descriptor.type, descriptor.read_only, node.get_parameter(name).value) == (kind, True, default)
        assert len(descriptor.description) > 40, name
    assert node.describe_parameter('precision').additional_constraints == 'one of: fp32, fp16, bf16, int8'
    # Read-only: fixed once the model is loaded.
    result = node.set_parameters([Parameter('compile', value=True)])[0]
    assert not result.successful and node.get_parameter('compile').value is False


def test_int8_is_accepted_and_bad_values_are_refused_at_start_up(declare):
    node = declare({'precision': 'int8', 'allow_cpu_fallback': False, 'compile': True})
    assert [node.get_parameter(n).value for n in ('precision', 'allow_cpu_fallback', 'compile')] == ['int8', False,
                                                                                                     True]
    with pytest.raises(ValueError, match=r'invalid parameter: precision must be one of fp32, fp16, bf16, int8, '
                                         r"got 'int4'"):
        declare({'precision': 'int4'})
    with pytest.raises(InvalidParameterTypeException):
        declare({'allow_cpu_fallback': 'yes'})


@pytest.mark.parametrize('precision,device,cuda,expected,problem', [
    ('int8', 'cpu', False, 'int8', None),
    ('int8', 'auto', False, 'int8', None),
    ('int8', 'cuda', True, 'fp32', 'precision int8 runs on the CPU only (dynamic quantisation) but device is cuda'),
    ('int8', 'auto', True, 'fp32', 'precision int8 runs on the CPU only (dynamic quantisation) but device auto '
                                   'chose CUDA'),
    ('bf16', 'auto', True, 'bf16', None),
    ('fp16', 'cuda', True, 'fp16', None),
    ('fp16', 'cpu', True, 'fp32', 'precision fp16 needs CUDA but HaMeR runs on the CPU (device cpu)'),
    ('fp16', 'auto', False, 'fp32', 'precision fp16 needs CUDA but HaMeR runs on the CPU (device auto, no CUDA'),
    ('fp32', 'cuda', True, 'fp32', None),
    # bf16 on the CPU: as the CPU allows (see the two tests below for both kinds of CPU).
    ('bf16', 'cpu', False, 'bf16', None),
    ('bf16', 'auto', False, 'bf16', None),
    ('bf16', 'cpu', True, 'bf16', None),
])
def test_a_precision_the_device_cannot_run_becomes_fp32_with_a_reason(precision, device, cuda, expected, problem,
                                                                       monkeypatch):
    monkeypatch.setattr('hamer_ros.cpu_info.native_bf16', lambda flags=None: 'AMX-BF16')
    used, reason = usable_precision(precision, device, cuda)
    assert used == expected
    if problem is None:
        assert reason is None
    else:
        assert reason.startswith(problem) and 'using fp32' in reason


def _defaults(**changes):
    values = defaults()
    values.update(changes)
    return values.__getitem__


def test_node_parameters_reach_the_model():
    options, problem = model_options(_defaults(device='cpu', precision='int8', threads=0), cuda_available=False)
    assert problem is None
    model = HamerModel.small_random(seed=0, **options)
    assert (model.precision, model.allow_cpu_fallback, str(model.device)) == ('int8', True, 'cpu')
    assert 'int8' in model.describe() and 'torch.compile' not in model.describe()

    # Device and precision that do not fit: the node still gets a working (fp32) model, and the reason.
    options, problem = model_options(_defaults(device='cpu', precision='fp16', allow_cpu_fallback=False,
                                               compile=True), cuda_available=False)
    assert problem.startswith('precision fp16 needs CUDA')
    model = HamerModel.small_random(seed=0, **options)
    assert (model.precision, model.allow_cpu_fallback) == ('fp32', False)
    assert 'torch.compile' in model.describe()


def test_tf_and_camera_geometry_parameters(declare):
    node = declare()
    expected = {'frame_prefix': ('{namespace}hand_', False), 'publish.tf_frames': ('joints', False),
                'perspective_correction': ('auto', True), 'image_rectified': (True, False)}
    for name, (default, read_only) in expected.items():
        descriptor = node.describe_parameter(name)
        assert (node.get_parameter(name).value, descriptor.read_only) == (default, read_only), name
        assert len(descriptor.description) > 40, name
    assert node.describe_parameter('publish.tf_frames').additional_constraints == 'one of: joints, wrist'
    assert node.describe_parameter('perspective_correction').additional_constraints == 'one of: auto, on, off'
    # Refused at start-up (and at run time by the same check, the node's set-parameters callback).
    for name, bad, words in (('frame_prefix', '{ns}hand_', 'only use the placeholder {namespace}'),
                             ('frame_prefix', 'hand _', 'must not contain spaces'),
                             ('publish.tf_frames', 'tips', 'publish.tf_frames must be one of joints, wrist'),
                             ('perspective_correction', 'yes', 'perspective_correction must be one of auto, on, off')):
        with pytest.raises(ValueError, match=re.escape(words)):
            declare({name: bad})
    assert declare({'frame_prefix': 'robot/{namespace}hand_'}).get_parameter('frame_prefix').value == \
        'robot/{namespace}hand_'


def test_detector_thresholds_are_declared_as_mediapipe_accepts_them(declare):
    """min_tracking_confidence 0.0 aborted the process in MediaPipe (SIGABRT, "min_similarity_threshold() > 0"):
    the declared range ends where MediaPipe's accepted values end, at start-up and at run time."""
    from rclpy.exceptions import InvalidParameterValueException

    from hamer_ros.detection.hand_detector import CONFIDENCE_RANGES

    node = declare()
    for name, (low, high) in CONFIDENCE_RANGES.items():
        declared = node.describe_parameter(f'detector.{name}').floating_point_range[0]
        assert (declared.from_value, declared.to_value) == (low, high)
    assert CONFIDENCE_RANGES['min_tracking_confidence'][0] > 0.0
    result = node.set_parameters([Parameter('detector.min_tracking_confidence', value=0.0)])[0]
    assert not result.successful and node.get_parameter('detector.min_tracking_confidence').value == 0.5
    with pytest.raises(InvalidParameterValueException):
        declare({'detector.min_tracking_confidence': 0.0})


def test_bf16_on_a_cpu_without_native_bf16_becomes_fp32_with_the_reason(monkeypatch):
    monkeypatch.setattr('hamer_ros.cpu_info.native_bf16', lambda flags=None: None)
    options, problem = model_options(_defaults(device='cpu', precision='bf16'), cuda_available=False)
    assert options['precision'] == 'fp32'
    assert problem.startswith("precision 'bf16' on the CPU needs native bf16 instructions (AMX or AVX512_BF16)")
    assert 'Using fp32' in problem and 'int8' in problem
    # On CUDA bf16 is autocast, whatever the CPU.
    assert usable_precision('bf16', 'cuda', True) == ('bf16', None)


def test_every_parameter_is_declared_as_its_row_of_the_table(declare):
    """The node's descriptors come from hamer_ros/ros/parameters.py: type, default, read-only, range, choices."""
    from hamer_ros.ros.parameters import PARAMETERS

    node = declare()
    kinds = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
             list: ParameterType.PARAMETER_DOUBLE_ARRAY}
    for param in PARAMETERS:
        descriptor = node.describe_parameter(param.name)
        assert (descriptor.type, descriptor.read_only, descriptor.description) == (
            kinds[type(param.default)], param.read_only, param.description), param.name
        assert node.get_parameter(param.name).value == param.default, param.name
        ranges = list(descriptor.integer_range) + list(descriptor.floating_point_range)
        if param.low is None:
            assert ranges == [], param.name
        else:
            assert [(r.from_value, r.to_value) for r in ranges] == [(param.low, param.high)], param.name
        assert descriptor.additional_constraints == ('one of: ' + ', '.join(param.choices) if param.choices
                                                     else ''), param.name
