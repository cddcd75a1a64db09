"""What every node process shares: the embodiment parameter, guarded inputs, parameters with
run-time validation, rate-limited reporting, and a spin loop that only a real shutdown ends."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from ..embodiment import Embodiment, load_embodiment
from ..ros.dds import use_large_frame_transport

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

#: one line per topic (and per kind of repeated error) at most this often, s of wall time
LOG_PERIOD_S = 10.0


def declare_embodiment(node: Node, default: str = "aloha") -> Embodiment:
    """Declare the read-only ``embodiment`` parameter (shipped name or YAML path) and load it."""
    node.declare_parameter("embodiment", default, ParameterDescriptor(read_only=True))
    return load_embodiment(node.get_parameter("embodiment").value)


# -- rate-limited reporting -------------------------------------------------------------------
class RateLimitedLog:
    """Logs the first occurrence of each key at once, then at most once per ``period_s`` with
    the number of repeats in between: a fault that repeats 50 times a second costs one line."""

    def __init__(self, logger, period_s: float = LOG_PERIOD_S):
        self.logger = logger
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._repeats: Counter[str] = Counter()

    def __call__(self, key: str, text: str, level: str = "warning") -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self._repeats[key] += 1
            return
        repeats = self._repeats.pop(key, 0)
        self._last[key] = now
        line = text + (f" ({repeats} more since the last report)" if repeats else "")
        # one call site per severity: rclpy refuses a call site whose severity changes
        if level == "error":
            self.logger.error(line)
        elif level == "info":
            self.logger.info(line)
        else:
            self.logger.warning(line)

    def forget(self, key: str) -> None:
        """The condition ended: its next occurrence is reported at once."""
        self._last.pop(key, None)
        self._repeats.pop(key, None)


class InputGuard:
    """Wraps subscription callbacks so that no message can raise out of one.

    A message whose conversion or validation fails is dropped, counted per topic, and
    reported in a rate-limited line naming the topic and the reason. ``values()`` gives the
    counts for /diagnostics.
    """

    def __init__(self, node: Node):
        self.node = node
        self.dropped: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self._log = RateLimitedLog(node.get_logger())

    def drop(self, topic: str, reason: str) -> None:
        self.dropped[topic] += 1
        self._log(f"drop:{topic}", f"dropped a message on {topic}: {reason[:300]}")

    def wrap(self, topic: str, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        def guarded(msg) -> None:
            self.received[topic] += 1
            try:
                callback(msg)
            except Exception as exc:  # noqa: BLE001 - no message may end the node
                self.drop(topic, f"{type(exc).__name__}: {exc}")

        return guarded

    def subscribe(self, msg_type, topic: str, callback: Callable[[Any], None], qos, paired: bool = False) -> Any:
        """``node.create_subscription`` with a guarded callback, counted under the resolved name.

        ``paired``: one of two subscriptions of a topic with different QoS (``ros/qos.py``); a
        publisher that only the other one matches is expected, not worth a warning.
        """
        name = self.node.resolve_topic_name(topic)
        events = SubscriptionEventCallbacks(incompatible_qos=lambda event: None) if paired else None
        return self.node.create_subscription(
            msg_type, topic, self.wrap(name, callback), qos, event_callbacks=events
        )

    def values(self) -> list[KeyValue]:
        values = [KeyValue(key=f"dropped {topic}", value=str(n)) for topic, n in sorted(self.dropped.items())]
        values.append(KeyValue(key="dropped_messages", value=str(sum(self.dropped.values()))))
        values.append(KeyValue(key="spin_errors", value=str(SPIN_ERRORS["count"])))
        return values


def guard_timer(node: Node, callback: Callable[[], None], what: str) -> Callable[[], None]:
    """A timer callback that logs (rate-limited) instead of raising: the next tick tries again."""
    log = RateLimitedLog(node.get_logger())

    def guarded() -> None:
        try:
            callback()
        except Exception as exc:  # noqa: BLE001 - a bad tick must not end the node
            log(what, f"{what} failed: {type(exc).__name__}: {exc}", level="error")

    return guarded


class WaitingReporter:
    """Reports a waiting state (what is missing, since when): at once when waiting begins,
    then when the reasons change (at most every ``MIN_CHANGE_S``) or every ``LOG_PERIOD_S``.
    Numbers inside the reasons (ages) do not count as a change."""

    MIN_CHANGE_S = 2.0

    def __init__(self, logger):
        self.logger = logger
        self._key: str | None = None
        self._since: float | None = None  # s, node clock: when waiting began
        self._last_log = -float("inf")  # wall s

    def waiting(self, reasons: str, now_s: float) -> str:
        """Log if due; returns the line with the time since waiting began (for diagnostics)."""
        key = re.sub(r"[-+]?\d[\d.e+-]*", "#", reasons)
        wall = time.monotonic()
        if self._since is None:
            self._since, self._last_log = now_s, -float("inf")
        line = f"waiting {now_s - self._since:.1f} s: {reasons}"
        quiet = wall - self._last_log
        if quiet >= LOG_PERIOD_S or (key != self._key and quiet >= self.MIN_CHANGE_S):
            self._key, self._last_log = key, wall
            self.logger.info(line)
        return line

    def ready(self, message: str) -> None:
        if self._since is not None:
            self.logger.info(message)
        self._since, self._key = None, None


# -- parameters -------------------------------------------------------------------------------
class NodeParameters:
    """Declares a node's parameters: ``fixed`` ones read-only (``ros2 param set`` fails with a
    reason), ``runtime`` ones changeable through a validated callback.

    ``apply(changes)`` receives ``{name: value}`` for runtime parameters and raises ValueError
    (with the reason given back to ``ros2 param set``) to refuse the whole set.
    """

    def __init__(
        self,
        node: Node,
        fixed: dict[str, Any],
        runtime: dict[str, Any] | None = None,
        apply: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.node = node
        self.runtime = dict(runtime or {})
        self._apply = apply
        for name, default in fixed.items():
            node.declare_parameter(name, default, ParameterDescriptor(read_only=True))
        for name, default in self.runtime.items():
            node.declare_parameter(name, default, ParameterDescriptor(description="changeable at run time"))
        self.values = {name: node.get_parameter(name).value for name in [*fixed, *self.runtime]}
        node.add_on_set_parameters_callback(self._on_set)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def _on_set(self, parameters) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in self.runtime}
        if not changes:
            return SetParametersResult(successful=True)
        if self._apply is not None:
            try:
                self._apply({**changes})
            except (ValueError, TypeError) as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        self.values.update(changes)
        self.node.get_logger().info(f"parameters changed: {changes}")
        return SetParametersResult(successful=True)


def startup_line(node: Node, subscribes: list[str], publishes: list[str]) -> None:
    """One line per node at start: what it listens to and what it sends."""
    node.get_logger().info(
        f"started: subscribes {', '.join(subscribes) or 'nothing'}; publishes {', '.join(publishes) or 'nothing'}"
    )


def call_service(client, request, what: str, wait: Callable[[Callable[[], bool], str], None]) -> Any:
    """Call a service whose response has ``success`` and ``message`` (std_srvs Trigger, SetBool)
    from a client session that spins its own executor: ``wait(done, what)`` spins until
    ``done()`` and raises on its deadline. A refusal (``success: false``) is an error."""
    wait(client.service_is_ready, f"waiting for {client.srv_name}")
    future = client.call_async(request)
    wait(future.done, what)
    response = future.result()
    if not response.success:
        raise RuntimeError(f"{client.srv_name} refused while {what}: {response.message}")
    return response


# -- the process's spin loop ------------------------------------------------------------------
#: errors raised by rclpy inside take/executor and survived by run_nodes (for /diagnostics)
SPIN_ERRORS = {"count": 0}


def _is_user_error(exc: Exception) -> bool:
    """The package's own errors name a bad file, checkpoint, statistic or parameter: a user
    fixes them from one line. (Matched by module so the chunk publisher never imports torch.)"""
    return type(exc).__module__.startswith("qwen_vla_ros.")


def _program() -> str:
    return sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "qwen_vla_ros"


#: Where an exception cannot propagate: Python prints it as "Exception ignored in ..." with a
#: traceback and carries on (importlib's module-lock weakref callback, run during imports).
_SWALLOWING_FRAMES = {("<frozen importlib._bootstrap>", "cb")}
#: How soon an interrupt that landed in such a frame is tried again, s.
_RETRY_S = 0.05


def _in_swallowing_frame(frame) -> bool:
    while frame is not None:
        if (frame.f_code.co_filename, frame.f_code.co_name) in _SWALLOWING_FRAMES:
            return True
        frame = frame.f_back
    return False


class _ShutdownRequest:
    """Set by SIGINT/SIGTERM. While the nodes are built a signal interrupts at once (model
    loading can take minutes); once spinning it only sets a flag, so no KeyboardInterrupt can
    land inside an rclpy call (pybind11 turns that into a RuntimeError traceback).

    A signal that arrives inside a frame that would swallow the KeyboardInterrupt (an import's
    weakref callback: CI once saw its "Exception ignored" traceback, and the build went on) is
    retried :data:`_RETRY_S` later through SIGALRM, outside that frame."""

    def __init__(self):
        self.signal: int | None = None
        self.building = True

    def __call__(self, signum, frame):
        self.signal = signum
        self._interrupt(frame)

    def retry(self, signum, frame):  # noqa: ARG002 - signal handler signature (SIGALRM)
        self._interrupt(frame)

    def _interrupt(self, frame) -> None:
        if not self.building:
            return
        if _in_swallowing_frame(frame):
            signal.setitimer(signal.ITIMER_REAL, _RETRY_S)
            return
        raise KeyboardInterrupt


def _spin(executor: SingleThreadedExecutor, request: _ShutdownRequest, logger) -> None:
    log = RateLimitedLog(logger)
    while request.signal is None and rclpy.ok():
        try:
            executor.spin_once(timeout_sec=0.1)  # short timeout: a signal is seen within 0.1 s
        except ExternalShutdownException:
            return
        except Exception as exc:  # noqa: BLE001 - rclpy take/executor errors must not end the node
            if not rclpy.ok():
                return
            SPIN_ERRORS["count"] += 1
            log("spin", f"executor error survived ({SPIN_ERRORS['count']} so far): {type(exc).__name__}: {exc}", "error")
            time.sleep(0.01)  # an error that repeats at once must not spin a core


def run_nodes(build: Callable[[], list[Node]], args: list[str] | None = None, exit_process: bool = True) -> int:
    """Init rclpy, build the nodes, spin them on one executor until SIGINT/SIGTERM.

    rclpy's own signal handler would invalidate the context before a node could publish its
    last command; this loop keeps the context alive so each node's ``on_shutdown()`` can
    command a safe hold first. With ``exit_process`` the process ends right after (streams
    flushed), so interpreter teardown of threads and DDS objects cannot delay the exit.
    Works with Humble's rclpy API.
    """
    use_large_frame_transport()  # camera frames larger than Fast DDS's default segment (ros/dds.py)
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    request = _ShutdownRequest()
    signal.signal(signal.SIGINT, request)
    signal.signal(signal.SIGTERM, request)
    signal.signal(signal.SIGALRM, request.retry)
    nodes: list[Node] = []
    code = 0
    try:
        nodes = build()
        request.building = False
        signal.setitimer(signal.ITIMER_REAL, 0)  # a retry still pending: the flag is enough now
        if request.signal is None:
            executor = SingleThreadedExecutor()
            for node in nodes:
                executor.add_node(node)
            _spin(executor, request, nodes[0].get_logger() if nodes else rclpy.logging.get_logger(_program()))
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        if request.signal is not None:
            pass  # interrupted while building: whatever the signal broke is of no interest now
        elif _is_user_error(exc):
            print(f"[{_program()}] cannot start: {exc}", file=sys.stderr)
            code = 2  # bringup.USER_ERROR_EXIT: bringup does not restart such a node
        else:
            traceback.print_exc()  # a bug: keep its traceback
            code = 1
    finally:
        # a second Ctrl-C (the terminal and bringup both send one) must not cut the hold short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _close(nodes)
        if exit_process:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return code


def _close(nodes: list[Node]) -> None:
    for node in nodes:
        hook = getattr(node, "on_shutdown", None)
        if hook is not None and rclpy.ok():
            try:
                hook()
            except Exception as exc:  # noqa: BLE001 - the other nodes still get their last word
                print(f"[{_program()}] {node.get_name()} shutdown: {exc}", file=sys.stderr)
    for node in nodes:
        node.destroy_node()
    if rclpy.ok():
        rclpy.shutdown()
