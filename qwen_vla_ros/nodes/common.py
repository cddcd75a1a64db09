"""What every node process shares: the embodiment parameter and a shutdown-safe spin loop."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from ..embodiment import Embodiment, load_embodiment


def declare_embodiment(node: Node, default: str = "aloha") -> Embodiment:
    """Declare the ``embodiment`` parameter (shipped name or YAML path) and load it."""
    node.declare_parameter("embodiment", default)
    return load_embodiment(node.get_parameter("embodiment").value)


def _raise_keyboard_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def _is_user_error(exc: Exception) -> bool:
    """The package's own errors name a bad file, checkpoint, statistic or parameter: a user
    fixes them from one line. (Matched by module so the chunk publisher never imports torch.)"""
    return type(exc).__module__.startswith("qwen_vla_ros.")


def _program() -> str:
    return sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "qwen_vla_ros"


def run_nodes(build: Callable[[], list[Node]], args: list[str] | None = None) -> int:
    """Init rclpy, build the nodes, spin them on one executor until SIGINT/SIGTERM.

    rclpy's own signal handler would invalidate the context before a node could publish its
    last command; this loop keeps the context alive so each node's ``on_shutdown()`` can
    command a safe hold first. Works with Humble's rclpy API.
    """
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    nodes: list[Node] = []
    try:
        nodes = build()
        executor = SingleThreadedExecutor()
        for node in nodes:
            executor.add_node(node)
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.1)  # short timeout: signals are handled promptly
    except Exception as exc:
        if not _is_user_error(exc):
            raise  # a bug: keep its traceback
        print(f"[{_program()}] cannot start: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # a second Ctrl-C (the terminal and bringup both send one) must not cut the hold short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for node in nodes:
            hook = getattr(node, "on_shutdown", None)
            if hook is not None and rclpy.ok():
                hook()
        for node in nodes:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
