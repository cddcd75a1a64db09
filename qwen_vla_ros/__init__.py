"""qwen_vla_ros: one Qwen-VLA policy driving ROS 2 robots described by embodiment files."""

__version__ = "0.1.0"
