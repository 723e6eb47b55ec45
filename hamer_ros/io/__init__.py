"""Offline input and output: bags, image/video/bag sources and record sinks, meshes, overlay rendering,
ONNX export, image headers, and the message stand-ins that let bags be read and written without ROS."""
