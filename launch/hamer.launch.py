"""Launch the hamer_ros node on a camera, optionally with RViz.

    ros2 launch hamer_ros hamer.launch.py image_topic:=/camera/color/image_rect \
        camera_info_topic:=/camera/color/camera_info device:=cuda rviz:=true data_dir:=/path/to/_DATA

The node subscribes to the relative topics `image` and `camera_info`; they are remapped here. With
use_compressed:=true it subscribes to `<image_topic>/compressed` instead (image_transport naming).
camera:=v4l2 or camera:=usb_cam also starts that camera driver (packages v4l2_camera / usb_cam, when installed)
on video_device, publishing rgb8 images on image_topic and its CameraInfo on camera_info_topic: a laptop webcam
in one command, e.g. `ros2 launch hamer_ros hamer.launch.py camera:=v4l2 rviz:=true` (its images are raw:
image_rectified is false then).

Rectified images by default: image_topic is image_proc's `image_rect` and the node takes the intrinsics from the
CameraInfo's P (image_rectified:=false for a raw image: K, lens distortion ignored with a warning).
boxes_topic remaps `hands/boxes_in` (hand boxes of another detector, read when the parameter external_boxes.mode
is only or both).

Optional parts (RViz, a camera driver) are looked up before anything starts: one that is not installed is
skipped with a warning, and they come before the node, so a part that fails to start can never leave the node
running on its own after launch has given up. The choices are made in OpaqueFunctions from the launch
configurations' values (no deprecated LaunchConfigurationEquals conditions). data_dir, num_hands and precision
left empty keep the values of params_file; respawn:=true restarts the node when it exits with an error (it
does when its processing stops).

hamer_node is a managed (lifecycle) node, started here as a launch_ros LifecycleNode (launch sees its transition
events, and ChangeState events of an including launch file reach it). autostart:=true (the default) takes it to
active: the launch argument sets the node's parameter autostart, with which the node configures and activates
itself as its process starts, also after a respawn. (Asking for the transitions from launch instead, with
ChangeState events on process start as ros2/demos lifecycle_py does, leaves launch exiting with an error when
Ctrl-C comes while such a request is pending: launch_ros's service client is destroyed under the waiting
request.) With autostart:=false it waits unconfigured for `ros2 lifecycle set <ns>/hamer_node configure`, then
`activate`.
"""
from ament_index_python.packages import PackageNotFoundError, get_package_prefix
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

PRECISIONS = ['fp32', 'fp16', 'bf16', 'int8']


def _installed(package: str) -> bool:
    try:
        get_package_prefix(package)
        return True
    except PackageNotFoundError:
        return False


def _optional_parts(context):
    """RViz and the camera driver as asked for, each only when its package is installed (else a warning)."""
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    share = FindPackageShare('hamer_ros')
    wanted = []
    if value('rviz') == 'true':
        wanted.append(('rviz2', 'rviz:=true', Node(
            package='rviz2', executable='rviz2', name='rviz2', output='screen',
            arguments=['-d', PathJoinSubstitution([share, 'config', 'hamer.rviz'])])))
    # Both drivers publish the relative topics image_raw and camera_info; rgb8 is an encoding the node reads.
    camera_remappings = [('image_raw', LaunchConfiguration('image_topic')),
                         ('camera_info', LaunchConfiguration('camera_info_topic'))]
    if value('camera') == 'v4l2':
        wanted.append(('v4l2_camera', 'camera:=v4l2', Node(
            package='v4l2_camera', executable='v4l2_camera_node', name='camera', output='screen',
            namespace=LaunchConfiguration('namespace'),
            parameters=[{'video_device': LaunchConfiguration('video_device'), 'output_encoding': 'rgb8'}],
            remappings=camera_remappings)))
    elif value('camera') == 'usb_cam':
        wanted.append(('usb_cam', 'camera:=usb_cam', Node(
            package='usb_cam', executable='usb_cam_node_exe', name='camera', output='screen',
            namespace=LaunchConfiguration('namespace'),
            parameters=[{'video_device': LaunchConfiguration('video_device'), 'pixel_format': 'yuyv2rgb'}],
            remappings=camera_remappings)))
    parts = []
    for package, asked_by, node in wanted:
        if _installed(package):
            parts.append(node)
        else:
            get_logger('hamer.launch').warning(
                f"{asked_by}: package '{package}' is not installed, starting hamer_node without it "
                f'(install it: sudo apt install ros-$ROS_DISTRO-{package.replace("_", "-")})')
    return parts


def node_overrides(value) -> dict:
    """Parameters of hamer_node set by launch arguments (`value(name)`), on top of params_file: device, the
    transport and image_rectified always, data_dir, precision and num_hands only when given."""
    overrides = {'autostart': value('autostart') == 'true',      # configure + activate as the process starts
                 'device': value('device'),
                 'image_transport': 'compressed' if value('use_compressed') == 'true' else 'raw',
                 # A camera started here publishes raw images.
                 'image_rectified': value('camera') == 'none' and value('image_rectified') == 'true'}
    if value('data_dir'):
        overrides['data_dir'] = value('data_dir')
    if value('precision'):
        overrides['precision'] = value('precision')
    if value('num_hands'):
        try:
            overrides['detector.num_hands'] = int(value('num_hands'))
        except ValueError:
            raise ValueError(f"num_hands:={value('num_hands')} is not a whole number (1 to 32)") from None
    return overrides


def _hamer_node(context):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    respawn = value('respawn') == 'true'
    node = LifecycleNode(
        package='hamer_ros', executable='hamer_node', name='hamer_node',
        namespace=LaunchConfiguration('namespace'), output='screen', emulate_tty=True,
        parameters=[LaunchConfiguration('params_file'), node_overrides(value)],
        remappings=[('image', LaunchConfiguration('image_topic')),
                    ('camera_info', LaunchConfiguration('camera_info_topic')),
                    ('hands/boxes_in', LaunchConfiguration('boxes_topic'))],
        respawn=respawn, respawn_delay=2.0 if respawn else 0.0)
    return [node]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare('hamer_ros')
    arguments = [
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its topics (hands/mano -> <ns>/hands/mano)'),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution([share, 'config', 'hamer.yaml']),
                              description='parameter file of the node (every parameter with its default)'),
        DeclareLaunchArgument('data_dir', default_value='',
                              description='HaMeR data folder (official _DATA layout: hamer_ckpts/, data/mano/); '
                                          'empty: the one in params_file, else $HAMER_ROS_DATA_DIR or '
                                          '~/.local/share/hamer_ros/_DATA'),
        DeclareLaunchArgument('image_topic', default_value='/camera/image_rect',
                              description='camera image topic (sensor_msgs/Image), rectified by default '
                                          '(image_proc\'s image_rect; see image_rectified)'),
        DeclareLaunchArgument('image_rectified', default_value='true', choices=['true', 'false'],
                              description='true: image_topic is rectified, intrinsics from the CameraInfo\'s P; '
                                          'false: a raw image, intrinsics from K, lens distortion ignored'),
        DeclareLaunchArgument('camera_info_topic', default_value='/camera/camera_info',
                              description='CameraInfo of that camera (intrinsics); without it a default camera '
                                          'is assumed'),
        DeclareLaunchArgument('device', default_value='auto', choices=['auto', 'cpu', 'cuda'],
                              description='compute device for HaMeR'),
        DeclareLaunchArgument('precision', default_value='', choices=[''] + PRECISIONS,
                              description='HaMeR precision: fp32, fp16 (CUDA), bf16 (CUDA, or CPUs with '
                                          'AMX/AVX512_BF16), int8 (CPU); empty: the one in params_file (fp32)'),
        DeclareLaunchArgument('num_hands', default_value='',
                              description='most hands found per image (1 to 32); empty: the one in params_file (8)'),
        DeclareLaunchArgument('use_compressed', default_value='false', choices=['true', 'false'],
                              description='subscribe to <image_topic>/compressed (sensor_msgs/CompressedImage)'),
        DeclareLaunchArgument('rviz', default_value='false', choices=['true', 'false'],
                              description='also start RViz with the hand markers, TF and overlay (skipped with a '
                                          'warning when rviz2 is not installed)'),
        DeclareLaunchArgument('camera', default_value='none', choices=['none', 'v4l2', 'usb_cam'],
                              description='also start a camera driver publishing image_topic and camera_info_topic: '
                                          'v4l2 (package v4l2_camera) or usb_cam (package usb_cam); skipped with a '
                                          'warning when not installed'),
        DeclareLaunchArgument('video_device', default_value='/dev/video0',
                              description='the camera device of camera:=v4l2|usb_cam'),
        DeclareLaunchArgument('boxes_topic', default_value='hands/boxes_in',
                              description='hand boxes of another detector (hamer_ros/HandBoxArray), read when the '
                                          'parameter external_boxes.mode is only or both'),
        DeclareLaunchArgument('respawn', default_value='false', choices=['true', 'false'],
                              description='restart hamer_node 2 s after it exits with an error'),
        DeclareLaunchArgument('autostart', default_value='true', choices=['true', 'false'],
                              description='take hamer_node (a lifecycle node) through configure and activate; '
                                          'false: it waits unconfigured for lifecycle transitions'),
    ]
    # Optional parts first: should one of them fail to start, launch stops before the node exists.
    return LaunchDescription(arguments + [OpaqueFunction(function=_optional_parts),
                                          OpaqueFunction(function=_hamer_node)])
