"""Controller commands: the control core's plain output commands -> ROS messages.

Built-in types are filled by convention; any other type (Interbotix JointGroupCommand,
JointSingleCommand, ...) is loaded by name and filled through the output's ``fields``
mapping, which the control core has already resolved to values.
"""

from __future__ import annotations

from typing import Any

from geometry_msgs.msg import Twist
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ..embodiment import Embodiment
from .messages import fill_fields, message_class, to_duration
from .qos import COMMAND_PUBLISHER


def command_to_msg(command: Any, stamp: Any) -> Any:
    """One OutputCommand -> its message (a trajectory point is reached in
    ``command.time_from_start_s``, one control period)."""
    values = [float(v) for v in command.values]
    if command.msg_type == "trajectory_msgs/msg/JointTrajectory":
        msg = JointTrajectory(joint_names=list(command.joint_names))
        # stamp zero = "start now" for joint_trajectory_controller; reach the point in one period
        msg.points = [JointTrajectoryPoint(positions=values, time_from_start=to_duration(command.time_from_start_s))]
        return msg
    if command.msg_type == "std_msgs/msg/Float64MultiArray":
        return Float64MultiArray(data=values)
    if command.msg_type == "sensor_msgs/msg/JointState":
        msg = JointState(name=list(command.joint_names), position=values)
        msg.header.stamp = stamp
        return msg
    if command.msg_type == "geometry_msgs/msg/Twist" and not command.fields:
        msg = Twist()
        msg.linear.x, msg.angular.z = values[0], values[1]
        return msg
    return fill_fields(message_class(command.msg_type)(), dict(command.fields or {}))


#: built-in command type -> (message class, the commanded values of one message), for listeners
#: of command topics (the simulator, the episode monitor)
COMMAND_READERS = {
    "trajectory_msgs/msg/JointTrajectory": (
        JointTrajectory,
        lambda m: list(m.points[-1].positions) if m.points else None,
    ),
    "std_msgs/msg/Float64MultiArray": (Float64MultiArray, lambda m: list(m.data)),
    "sensor_msgs/msg/JointState": (JointState, lambda m: list(m.position)),
    "geometry_msgs/msg/Twist": (Twist, lambda m: [m.linear.x, m.angular.z]),
}


class CommandPublishers:
    """One publisher per embodiment output; message classes resolved once, at start-up.

    ``stamp_trajectories``: JointTrajectory headers carry the send time instead of zero. Both
    mean "start now" to a joint_trajectory_controller; only a sender on the robot's own clock
    should stamp (the sim's expert teleoperator), and then a recording knows when each
    command was sent exactly, not only when the recorder got it. ``qos``: the publishers'
    profile (default :data:`COMMAND_PUBLISHER`).
    """

    def __init__(self, node, embodiment: Embodiment, stamp_trajectories: bool = False, qos=COMMAND_PUBLISHER):
        self.stamp_trajectories = stamp_trajectories
        self.publishers = {
            out.topic: node.create_publisher(message_class(out.type), out.topic, qos)
            for out in embodiment.outputs
        }

    def publish(self, commands: list, stamp: Any) -> None:
        for command in commands:
            msg = command_to_msg(command, stamp)
            if self.stamp_trajectories and isinstance(msg, JointTrajectory):
                msg.header.stamp = stamp
            self.publishers[command.topic].publish(msg)
