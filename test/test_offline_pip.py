"""A pip install without ROS: the wheel carries the message definitions, and `infer` writes a bag that reads
back with the node's message types."""
import subprocess
import sys

import pytest

from hamer_ros.io import bag_io

from hamer_test_files import write_small_data_dir
from offline_helpers import ROOT, run_without_ros, synthetic_image, write_camera_bag


@pytest.mark.slow
def test_wheel_without_ros_writes_bags(tmp_path):
    wheel_dir, prefix = tmp_path / 'wheel', tmp_path / 'prefix'
    build = subprocess.run([sys.executable, '-m', 'pip', 'wheel', str(ROOT), '--no-deps', '--no-build-isolation',
                            '-q', '-w', str(wheel_dir)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next(wheel_dir.glob('hamer_ros-*.whl'))
    install = subprocess.run([sys.executable, '-m', 'pip', 'install', '--prefix', str(prefix), '--no-deps',
                              '--ignore-installed', '-q', str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    site = next(prefix.glob('lib/python3*/site-packages'))
    assert (prefix / 'share' / 'hamer_ros' / 'msg' / 'HandMesh.msg').read_text() == \
        (ROOT / 'msg' / 'HandMesh.msg').read_text()

    camera = write_camera_bag(tmp_path / 'camera', [synthetic_image(seed=i) for i in range(3)])
    boxes = tmp_path / 'boxes.json'
    boxes.write_text('[{"box_xyxy": [180, 50, 290, 180], "side": "right"}]')
    data_dir = write_small_data_dir(tmp_path / '_DATA')
    code = ('import sys\nimport hamer_ros\nfrom hamer_ros.io import bag_io, message_classes\n'
            'assert hamer_ros.__path__[0].startswith(sys.argv[1]), hamer_ros.__path__\n'
            'print("definitions:", bag_io.message_definition_dir(), "ros classes:", message_classes.ROS_CLASSES)\n'
            'from hamer_ros.cli import main\nsys.exit(main(sys.argv[2:]))\n')
    result = run_without_ros(code, str(site), 'infer', str(camera), '--out', str(tmp_path / 'out'), '--data-dir',
                             str(data_dir), '--boxes', str(boxes), '--quiet', package_root=site)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'definitions: {prefix / "share" / "hamer_ros" / "msg"} ros classes: False' in result.stdout
    meshes = bag_io.read_bag(tmp_path / 'out' / 'hands', ['/hands/mano'])
    assert [len(m.message.hands) for m in meshes] == [1, 1, 1]
    assert len(meshes[0].message.hands[0].vertices) == 778 * 3
