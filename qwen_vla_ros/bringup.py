"""Start the whole node graph without launch_ros: `qwen-vla bringup`.

Each node runs in its own process (so model compute can never stall the control loop),
started exactly as `ros2 run` would, with the same parameters as the launch files:
``--ros-args --params-file FILE -p name:=value -r __ns:=/ns``. Ctrl-C (or SIGTERM) stops
the processes in reverse order, so the chunk publisher commands its hold last.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: process -> module started with `python -m`
NODE_MODULES = {
    "sim_bridge": "qwen_vla_ros.nodes.sim_bridge_node",
    "inference_node": "qwen_vla_ros.nodes.inference_node",
    "chunk_publisher": "qwen_vla_ros.nodes.chunk_publisher_node",
}


@dataclass
class GraphConfig:
    """What to start; every field maps onto a node parameter or a ROS argument.

    ``None`` leaves a parameter to the params file, or to the node's default: values given
    here win over the params file, as `-p` wins over `--params-file` in `ros2 run`.
    """

    embodiment: str = "aloha"
    model: str | None = None
    device: str | None = None
    params_file: str | None = None
    namespace: str = ""
    use_sim_time: bool = False
    sim: bool = False
    strategy: str | None = None
    extra: dict[str, dict[str, object]] = field(default_factory=dict)  # node -> {param: value}

    def nodes(self) -> list[str]:
        return (["sim_bridge"] if self.sim else []) + ["inference_node", "chunk_publisher"]

    def parameters(self, node: str) -> dict[str, object]:
        """The parameters one node gets (the launch files use this too)."""
        params: dict[str, object] = {"embodiment": self.embodiment, "use_sim_time": self.use_sim_time or self.sim}
        if node == "inference_node":
            params.update(model=self.model, device=self.device, strategy=self.strategy)
        if node == "chunk_publisher":
            params["strategy"] = self.strategy
        if node == "sim_bridge":
            params["use_sim_time"] = False  # the sim is the clock
        params.update(self.extra.get(node, {}))
        return {name: value for name, value in params.items() if value is not None}

    def ros_args(self, node: str) -> list[str]:
        """`--ros-args` for one node process, as `ros2 run` would take them."""
        params = self.parameters(node)
        args = ["--ros-args"]
        if self.params_file:
            args += ["--params-file", str(Path(self.params_file).resolve())]
        for name, value in params.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["-p", f"{name}:={text}"]
        if self.namespace:
            args += ["-r", f"__ns:=/{self.namespace.strip('/')}"]
        return args


def ament_prefix_path(current: str) -> str:
    """AMENT_PREFIX_PATH with this venv in front where the package is installed into it, so
    ament_index, `ros2 run` and launch find it without sourcing anything."""
    marker = Path(sys.prefix) / "share/ament_index/resource_index/packages/qwen_vla_ros"
    paths = [p for p in current.split(os.pathsep) if p]
    if marker.exists() and sys.prefix not in paths:
        paths.insert(0, sys.prefix)
    return os.pathsep.join(paths)


def child_environment() -> dict[str, str]:
    """The environment for node processes (ament finds this package; output is unbuffered)."""
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = ament_prefix_path(env.get("AMENT_PREFIX_PATH", ""))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Graph:
    """The node processes of one bringup; a context manager that always stops them."""

    def __init__(self, config: GraphConfig, log_dir: Path | None = None):
        self.config = config
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self) -> Graph:
        env = child_environment()
        for node in self.config.nodes():
            command = [sys.executable, "-m", NODE_MODULES[node], *self.config.ros_args(node)]
            out = None
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                out = open(self.log_dir / f"{node}.log", "w")  # noqa: SIM115 - closed with the process
            self.processes[node] = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
        return self

    def exited(self) -> dict[str, int]:
        """Processes that have ended, with their exit codes."""
        return {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}

    def stop(self, timeout_s: float = 10.0) -> None:
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Graph:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_node_params(items: list[str]) -> dict[str, dict[str, object]]:
    """``NODE.NAME=VALUE`` items -> {node: {name: value}}; values parsed as YAML scalars."""
    import yaml

    params: dict[str, dict[str, object]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        node, dot, name = key.partition(".")
        if not (sep and dot and node in NODE_MODULES and name):
            raise SystemExit(
                f"--param {item!r}: expected NODE.NAME=VALUE with NODE one of {', '.join(NODE_MODULES)}"
            )
        params.setdefault(node, {})[name] = yaml.safe_load(text)
    return params


def add_param_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--param", action="append", default=[], metavar="NODE.NAME=VALUE",
        help="a node parameter, e.g. inference_node.rtc_prefix=false (repeatable)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embodiment", default="aloha", help="shipped name or YAML path")
    parser.add_argument("--model", help="checkpoint folder, hub id, or 'tiny' (node default: tiny)")
    parser.add_argument("--device", help="torch device: cpu, cuda, cuda:1 ... (node default: cpu)")
    parser.add_argument("--params-file", help="ROS 2 parameter YAML applied to every node")
    parser.add_argument("--namespace", default="", help="ROS namespace for every node")
    parser.add_argument("--use-sim-time", action="store_true", help="follow /clock")
    parser.add_argument("--sim", action="store_true", help="also start the simulated rig (sim_bridge)")
    parser.add_argument(
        "--strategy", choices=["synchronous", "temporal_ensemble", "async"],
        help="how the chunk publisher switches between chunks (node default: async)",
    )
    add_param_argument(parser)


def run(args: argparse.Namespace) -> int:
    config = GraphConfig(
        embodiment=args.embodiment, model=args.model, device=args.device, params_file=args.params_file,
        namespace=args.namespace, use_sim_time=args.use_sim_time, sim=args.sim, strategy=args.strategy,
        extra=parse_node_params(args.param),
    )
    print(f"[bringup] starting {', '.join(config.nodes())} for embodiment {config.embodiment}; Ctrl-C stops")
    with Graph(config) as graph:
        try:
            while not graph.exited():
                time.sleep(0.5)
            print(f"[bringup] a node exited: {graph.exited()}; stopping the others", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("[bringup] stopping (the chunk publisher holds the robot first)")
            return 0
