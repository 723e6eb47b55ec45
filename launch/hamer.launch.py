"""Launch the hamer_ros node on a camera, optionally with RViz.

    ros2 launch hamer_ros hamer.launch.py image_topic:=/camera/color/image_raw \
        camera_info_topic:=/camera/color/camera_info device:=cuda rviz:=true

The node subscribes to the relative topics `image` and `camera_info`; they are remapped here. The image is taken
to be rectified (image_proc's image_rect: the node uses the CameraInfo's P, distortion already removed); for a raw
image pass image_rectified:=false (K is used and the lens distortion D is ignored, with a warning). With
use_compressed:=true it subscribes to `<image_topic>/compressed` instead (image_transport naming).
boxes_topic remaps `hands/boxes_in`, the hand boxes of another detector (parameter external_boxes.mode).
camera:=v4l2 or camera:=usb_cam also starts that camera driver (packages v4l2_camera / usb_cam, when installed)
on video_device, publishing rgb8 images on image_topic and its CameraInfo on camera_info_topic: a laptop webcam
in one command, e.g. `ros2 launch hamer_ros hamer.launch.py camera:=v4l2 rviz:=true` (its images are raw:
image_rectified is false then).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, LaunchConfigurationEquals
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare('hamer_ros')
    arguments = [
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its topics (hands/mano -> <ns>/hands/mano)'),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution([share, 'config', 'hamer.yaml']),
                              description='parameter file of the node (every parameter with its default)'),
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
        DeclareLaunchArgument('use_compressed', default_value='false', choices=['true', 'false'],
                              description='subscribe to <image_topic>/compressed (sensor_msgs/CompressedImage)'),
        DeclareLaunchArgument('rviz', default_value='false', choices=['true', 'false'],
                              description='also start RViz with the hand markers, TF and overlay'),
        DeclareLaunchArgument('camera', default_value='none', choices=['none', 'v4l2', 'usb_cam'],
                              description='also start a camera driver publishing image_topic and camera_info_topic: '
                                          'v4l2 (package v4l2_camera) or usb_cam (package usb_cam)'),
        DeclareLaunchArgument('video_device', default_value='/dev/video0',
                              description='the camera device of camera:=v4l2|usb_cam'),
        DeclareLaunchArgument('boxes_topic', default_value='hands/boxes_in',
                              description='hand boxes of another detector (hamer_ros/HandBoxArray), read when the '
                                          'parameter external_boxes.mode is only or both'),
    ]
    # Both drivers publish the relative topics image_raw and camera_info; rgb8 is an encoding the node reads.
    camera_remappings = [('image_raw', LaunchConfiguration('image_topic')),
                         ('camera_info', LaunchConfiguration('camera_info_topic'))]
    v4l2 = Node(
        package='v4l2_camera', executable='v4l2_camera_node', name='camera', output='screen',
        namespace=LaunchConfiguration('namespace'),
        parameters=[{'video_device': LaunchConfiguration('video_device'), 'output_encoding': 'rgb8'}],
        remappings=camera_remappings, condition=LaunchConfigurationEquals('camera', 'v4l2'))
    usb_cam = Node(
        package='usb_cam', executable='usb_cam_node_exe', name='camera', output='screen',
        namespace=LaunchConfiguration('namespace'),
        parameters=[{'video_device': LaunchConfiguration('video_device'), 'pixel_format': 'yuyv2rgb'}],
        remappings=camera_remappings, condition=LaunchConfigurationEquals('camera', 'usb_cam'))
    image_transport = PythonExpression(["'compressed' if '", LaunchConfiguration('use_compressed'),
                                        "' == 'true' else 'raw'"])
    # A camera started here publishes raw images.
    image_rectified = PythonExpression(["'", LaunchConfiguration('camera'), "' == 'none' and '",
                                        LaunchConfiguration('image_rectified'), "' == 'true'"])
    hamer = Node(
        package='hamer_ros', executable='hamer_node', name='hamer_node',
        namespace=LaunchConfiguration('namespace'), output='screen', emulate_tty=True,
        parameters=[LaunchConfiguration('params_file'),
                    {'device': LaunchConfiguration('device'), 'image_transport': image_transport,
                     'image_rectified': image_rectified}],
        remappings=[('image', LaunchConfiguration('image_topic')),
                    ('camera_info', LaunchConfiguration('camera_info_topic')),
                    ('hands/boxes_in', LaunchConfiguration('boxes_topic'))])
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', output='screen',
        arguments=['-d', PathJoinSubstitution([share, 'config', 'hamer.rviz'])],
        condition=IfCondition(LaunchConfiguration('rviz')))
    return LaunchDescription(arguments + [v4l2, usb_cam, hamer, rviz])
