"""The ROS 2 shell: the node, its parameters, converters to and from messages, markers, TF, diagnostics.

The only part of hamer_ros that imports rclpy (test/test_layout.py checks it)."""
