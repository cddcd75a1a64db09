"""ros2 launch qwen_vla_ros aloha_sim.launch.py [model:=DIR] [strategy:=async] ...

The simulated ALOHA rig (sim_bridge, owning /clock) plus the whole node graph on
simulated time. Then: ros2 topic pub --once /instruction std_msgs/msg/String "data: 'pick up the cube'"
"""

from qwen_vla_ros.launch_description import generate_graph_description


def generate_launch_description():
    return generate_graph_description(embodiment="aloha_sim", sim=True)
