"""The launch files' shared body: launch arguments -> the same parameters `qwen-vla bringup` uses.

Only imported by launch files (it needs launch and launch_ros). Each launch argument maps
onto a :class:`~qwen_vla_ros.bringup.GraphConfig` field, so `ros2 launch` and
`qwen-vla bringup` start identical nodes.
"""

from __future__ import annotations

import inspect
import os

from launch import LaunchContext, LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
    Shutdown,
)
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from .bringup import ESSENTIAL, RESTARTABLE, GraphConfig, RestartPolicy
from .ros.dds import dds_environment

PACKAGE = "qwen_vla_ros"

ARGUMENTS = {
    "embodiment": "embodiment file (path) or shipped name",
    "model": "checkpoint folder, hub id, or 'tiny' (untrained); empty = node default / params file",
    "device": "torch device (cpu, cuda, cuda:1); empty = node default / params file",
    "params_file": "ROS 2 parameter YAML for every node; empty = none",
    "namespace": "namespace for every node",
    "use_sim_time": "follow /clock (true/false)",
    "strategy": "synchronous | temporal_ensemble | async; empty = node default / params file",
    "sim": "also start the simulated rig (true/false)",
}


def _respawn_options(name: str) -> dict:
    """Inference is respawned after a delay (the chunk publisher holds meanwhile), at most
    ``RestartPolicy.max_restarts`` times where launch supports a limit (Iron and later)."""
    if name not in RESTARTABLE:
        return {}
    policy = RestartPolicy()
    options: dict = {"respawn": True, "respawn_delay": policy.first_delay_s * 2}
    # the option lives on ExecuteProcess or on its base ExecuteLocal, depending on the version
    inits = [vars(cls)["__init__"] for cls in ExecuteProcess.__mro__ if "__init__" in vars(cls)]
    if any("respawn_max_retries" in inspect.signature(init).parameters for init in inits):
        options["respawn_max_retries"] = policy.max_restarts
    return options


def _nodes(context: LaunchContext) -> list:
    """The graph's nodes, plus: when an essential one (chunk publisher, sim) exits, shut down."""
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    config = GraphConfig(
        embodiment=value["embodiment"],
        model=value["model"] or None,
        device=value["device"] or None,
        params_file=value["params_file"] or None,
        namespace=value["namespace"],
        use_sim_time=value["use_sim_time"].lower() == "true",
        sim=value["sim"].lower() == "true",
        strategy=value["strategy"] or None,
    )
    nodes = []
    for name in config.nodes():
        parameters: list = [config.params_file] if config.params_file else []
        parameters.append(config.parameters(name))
        nodes.append(
            Node(
                package=PACKAGE,
                executable=name,
                # no `name=`: launch_ros would rename every node of the process to it, and the
                # inference process holds two (observation_node and inference_node)
                namespace=config.namespace or None,
                parameters=parameters,
                output="screen",
                emulate_tty=True,
                # Ctrl-C reaches every node at once; SIGTERM only if one is still up after 3 s
                sigterm_timeout="3",
                **_respawn_options(name),
            )
        )
    stops = [
        RegisterEventHandler(
            OnProcessExit(target_action=node, on_exit=[Shutdown(reason=f"{name} exited: stopping the graph")])
        )
        for name, node in zip(config.nodes(), nodes, strict=True)
        if name in ESSENTIAL
    ]
    return [*nodes, *stops]


def generate_graph_description(embodiment: str, sim: bool = False) -> LaunchDescription:
    defaults = {
        "embodiment": embodiment, "model": "", "device": "", "params_file": "", "namespace": "",
        "use_sim_time": "true" if sim else "false", "strategy": "", "sim": "true" if sim else "false",
    }
    arguments = [
        DeclareLaunchArgument(name, default_value=defaults[name], description=text)
        for name, text in ARGUMENTS.items()
    ]
    # Fast DDS's shared-memory segment sized for camera frames, also for camera drivers that a
    # lab's launch file starts after including this one (unless it set its own profile)
    dds = [SetEnvironmentVariable(name, value) for name, value in dds_environment(os.environ).items()]
    return LaunchDescription([*arguments, *dds, OpaqueFunction(function=_nodes)])
