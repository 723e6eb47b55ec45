"""Accuracy on the standard hand benchmarks (FreiHAND, HO3D, InterHand2.6M): dataset readers in their published
layouts and the benchmarks' metrics, plain Python (numpy/scipy; no torch, no rclpy). `python -m hamer_ros evaluate`
drives them; docs/accuracy.md says how to get each dataset and what was measured."""
