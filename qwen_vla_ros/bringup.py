"""Start the whole node graph without launch_ros: `qwen-vla bringup`.

Each node runs in its own process (so model compute can never stall the control loop),
started exactly as `ros2 run` would, with the same parameters as the launch files:
``--ros-args --params-file FILE -p name:=value -r __ns:=/ns``.

Supervision: a crashed inference process is restarted with back-off (1, 2, 4 ... s, at most 5
times) while the chunk publisher holds; when the chunk publisher (or the simulated rig)
exits, every other process is stopped. Ctrl-C or SIGTERM stops every process within 3 s
(SIGKILL after that), the chunk publisher first so that its final hold goes out while the
rig still listens; the node processes also get SIGTERM if bringup itself is killed.
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

from .ros.dds import dds_environment

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
    #: start the policy (inference process and chunk publisher); False: the sim alone, driven
    #: by another command source (the sim bridge's expert teleoperator, `collect --via-graph`)
    policy: bool = True

    def nodes(self) -> list[str]:
        return (["sim_bridge"] if self.sim else []) + (["inference_node", "chunk_publisher"] if self.policy else [])

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
    env.update(dds_environment(env))  # camera frames need a larger shared-memory segment
    return env


#: processes the graph cannot run without: when one exits, every other is stopped (a graph
#: without its safety layer, or without its robot, must not run)
ESSENTIAL = ("chunk_publisher", "sim_bridge")
#: restarted when they exit: the chunk publisher holds meanwhile
RESTARTABLE = ("inference_node",)
#: the exit code of a node that cannot start because of a user error (nodes/common.run_nodes)
USER_ERROR_EXIT = 2


@dataclass
class RestartPolicy:
    """Back-off for restarting a crashed process: ``first_delay_s`` doubling up to
    ``max_delay_s``; at most ``max_restarts`` restarts in a run (then it stays down and the
    chunk publisher keeps holding)."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_restarts: int = 5

    def delay_s(self, restarts_so_far: int) -> float:
        return min(self.first_delay_s * 2**restarts_so_far, self.max_delay_s)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the bringup process dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Graph:
    """The node processes of one bringup; a context manager that always stops them.

    ``supervise()`` (called periodically) restarts a crashed inference process with back-off
    and tells when an essential process exited.
    """

    def __init__(self, config: GraphConfig, log_dir: Path | None = None, restart: RestartPolicy | None = None):
        self.config = config
        self.log_dir = log_dir
        self.restart_policy = restart or RestartPolicy()
        self.processes: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {}
        self._restart_at: dict[str, float] = {}

    def _launch(self, node: str) -> subprocess.Popen:
        command = [sys.executable, "-m", NODE_MODULES[node], *self.config.ros_args(node)]
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{node}.log", "a")  # noqa: SIM115 - closed with the process
        kwargs = {"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}
        process = subprocess.Popen(
            command, env=child_environment(), stdout=out, stderr=subprocess.STDOUT if out else None, **kwargs
        )
        if out is not None:
            out.close()  # the child holds its own descriptor
        return process

    def start(self) -> Graph:
        for node in self.config.nodes():
            self.processes[node] = self._launch(node)
        return self

    def exited(self) -> dict[str, int]:
        """Processes that have ended, with their exit codes."""
        return {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}

    def supervise(self, now: float | None = None) -> str | None:
        """Restart crashed inference when its back-off has passed; returns why the whole graph
        must stop (an essential process exited), or None. ``now``: monotonic s."""
        now = time.monotonic() if now is None else now
        for name, code in self.exited().items():
            if name in ESSENTIAL:
                return f"{name} exited with code {code}"
            if name not in RESTARTABLE:
                continue
            if code == USER_ERROR_EXIT:  # a bad checkpoint or parameter: a restart cannot fix it
                return f"{name} cannot start (see its 'cannot start' line)"
            done = self.restarts.get(name, 0)
            if done >= self.restart_policy.max_restarts:
                if self._restart_at.pop(name, None) is not None:
                    print(
                        f"[bringup] {name} exited (code {code}) after {done} restarts: not restarting again; "
                        "the chunk publisher keeps holding", file=sys.stderr, flush=True,
                    )
                continue
            due = self._restart_at.setdefault(name, now + self.restart_policy.delay_s(done))
            if now >= due:
                self.restarts[name] = done + 1
                del self._restart_at[name]
                print(f"[bringup] restarting {name} (exit code {code}; restart {done + 1} of "
                      f"{self.restart_policy.max_restarts})", file=sys.stderr, flush=True)
                self.processes[name] = self._launch(name)
        return None

    def stop(self, timeout_s: float = 3.0) -> None:
        """SIGINT to every node (the chunk publisher first: it sends the final hold), SIGKILL
        to whatever is left after ``timeout_s``."""
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


class StopRequest:
    """SIGINT and SIGTERM set a flag; ``raise_if_set()`` turns it into KeyboardInterrupt at a
    point of the caller's choosing (never inside an rclpy call, where pybind11 would turn it
    into a RuntimeError). Installed explicitly, so a background job (SIGINT ignored) stops too."""

    def __init__(self):
        self.signal: int | None = None
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.signal = signum

    def raise_if_set(self) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """SIGINT and SIGTERM both raise KeyboardInterrupt here (the main loop stops the graph).

    Installed explicitly: a shell starts background jobs with SIGINT ignored, and Python then
    keeps it ignored; SIGTERM would otherwise kill bringup and orphan its nodes.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def run(args: argparse.Namespace) -> int:
    config = GraphConfig(
        embodiment=args.embodiment, model=args.model, device=args.device, params_file=args.params_file,
        namespace=args.namespace, use_sim_time=args.use_sim_time, sim=args.sim, strategy=args.strategy,
        extra=parse_node_params(args.param),
    )
    _stop_on_signals()
    print(f"[bringup] starting {', '.join(config.nodes())} for embodiment {config.embodiment}; Ctrl-C stops", flush=True)
    graph = Graph(config)
    try:
        graph.start()
        while True:
            reason = graph.supervise()
            if reason is not None:
                print(f"[bringup] {reason}: stopping the others", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("[bringup] stopping (the chunk publisher holds the robot first)", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        graph.stop()
