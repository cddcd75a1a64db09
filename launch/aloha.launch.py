"""ros2 launch qwen_vla_ros aloha.launch.py [embodiment:=FILE] [model:=DIR] [device:=cuda] ...

Starts the inference process (observation + inference nodes) and the chunk publisher for
the aloha embodiment; `ros2 launch qwen_vla_ros aloha.launch.py --show-args` lists the arguments.
"""

from qwen_vla_ros.launch_description import generate_graph_description


def generate_launch_description():
    return generate_graph_description(embodiment="aloha")
