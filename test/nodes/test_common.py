"""What every node shares: duplicate filter, rate-limited logs, validated parameters, and a
spin loop that survives errors and ends cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest
from node_test_helpers import wait_for
from rclpy.parameter import Parameter

from qwen_vla_ros.bringup import child_environment
from qwen_vla_ros.nodes.chunk_publisher_node import ChunkPublisherNode
from qwen_vla_ros.nodes.common import RateLimitedLog, WaitingReporter
from qwen_vla_ros.ros.dedup import DuplicateFilter

pytestmark = pytest.mark.ros


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_duplicate_filter_drops_the_second_copy_of_each_message():
    clock = FakeClock()
    seen = DuplicateFilter(window_s=2.0, clock=clock)
    # a transient-local publisher: both subscriptions get True, False, in order, interleaved
    assert seen.accept(0, True) and seen.accept(0, False)
    assert not seen.accept(1, True) and not seen.accept(1, False)
    # a volatile publisher: only subscription 1 gets its messages, every one is new
    assert seen.accept(1, True) and seen.accept(1, True)
    clock.t = 5.0  # copies never come for those: they expire
    assert seen.accept(0, True)


def test_duplicate_filter_keeps_a_late_release_from_undoing_a_new_engage():
    seen = DuplicateFilter(clock=FakeClock())
    applied = [v for sub, v in [(0, False), (0, True), (1, False), (1, True)] if seen.accept(sub, v)]
    assert applied == [False, True]


class ListLogger:
    def __init__(self):
        self.lines: list[str] = []

    def warning(self, text):
        self.lines.append(text)

    info = error = warning


def test_rate_limited_log_reports_once_then_counts_the_repeats(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("qwen_vla_ros.nodes.common.time.monotonic", lambda: now[0])
    logger = ListLogger()
    log = RateLimitedLog(logger, period_s=10.0)
    for _ in range(50):
        log("topic", "dropped")
    log("other", "other reason")
    assert logger.lines == ["dropped", "other reason"]
    now[0] += 10.5
    log("topic", "dropped")
    assert logger.lines[-1] == "dropped (49 more since the last report)"


def test_read_only_parameters_refuse_and_runtime_ones_are_validated_then_applied(ros_context):
    node = ChunkPublisherNode(context=ros_context, parameter_overrides=[Parameter("embodiment", value="aloha_sim")])
    try:
        result = node.set_parameters([Parameter("strategy", value="synchronous")])[0]
        assert not result.successful and "read-only" in result.reason.lower()
        assert node.loop.strategy == "async"
        result = node.set_parameters([Parameter("blend_steps", value=-3)])[0]
        assert not result.successful and "blend_steps must be" in result.reason
        assert node.loop.scheduler.blend_steps == 5
        assert node.set_parameters([Parameter("blend_steps", value=9)])[0].successful
        assert node.loop.scheduler.blend_steps == 9 and node.get_parameter("blend_steps").value == 9
        assert node.set_parameters([Parameter("discontinuity_steps", value=4.0)])[0].successful
        assert node.loop.limiter.discontinuity_steps == 4.0
        assert not node.set_parameters([Parameter("ensemble_decay", value=float("nan"))])[0].successful
    finally:
        node.destroy_node()


FLAKY_NODE = """
import sys
from rclpy.node import Node
from qwen_vla_ros.nodes.common import run_nodes

class Flaky(Node):
    def __init__(self):
        super().__init__("flaky")
        self.calls = 0
        self.create_timer(0.02, self.tick)

    def tick(self):
        self.calls += 1
        if self.calls <= 5:
            raise RuntimeError("Unable to convert call argument '0' to Python object")
        if self.calls == 6:
            print("still spinning", flush=True)

    def on_shutdown(self):
        print("last words", flush=True)

sys.exit(run_nodes(lambda: [Flaky()], sys.argv))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_spin_loop_survives_executor_errors_and_ends_cleanly_on_a_signal(tmp_path, signum):
    script = tmp_path / "flaky.py"
    script.write_text(textwrap.dedent(FLAKY_NODE))
    log = tmp_path / "out.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, str(script)], stdout=out, stderr=subprocess.STDOUT,
                                   env=child_environment())
    try:
        assert wait_for(lambda: "still spinning" in log.read_text(), timeout_s=30), log.read_text()
        sent = time.monotonic()
        process.send_signal(signum)
        code = process.wait(timeout=10)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert code == 0, text
    assert took < 3.0, f"exit took {took:.2f} s"
    assert "last words" in text and "Traceback" not in text and "KeyboardInterrupt" not in text
    assert "executor error survived" in text


def test_waiting_reporter_says_what_is_missing_since_when_at_a_sane_rate(monkeypatch):
    wall = [0.0]
    monkeypatch.setattr("qwen_vla_ros.nodes.common.time.monotonic", lambda: wall[0])
    logger = ListLogger()
    waiting = WaitingReporter(logger)
    for second in range(30):  # called once a second, ages changing, a camera flapping
        wall[0] = float(second)
        reasons = "no instruction" + ("; camera 'cam_high' is stale: 0.3 s" if second % 2 else "")
        line = waiting.waiting(reasons, now_s=100.0 + second)
    assert line.startswith("waiting 29.0 s: ")
    assert logger.lines[0] == "waiting 0.0 s: no instruction"
    assert len(logger.lines) <= 30 / WaitingReporter.MIN_CHANGE_S + 1  # not one line per flap
    waiting.ready("complete")
    assert logger.lines[-1] == "complete"
    waiting.ready("complete")
    assert logger.lines.count("complete") == 1


def test_an_interrupt_inside_an_import_callback_is_retried_outside_it():
    """A KeyboardInterrupt raised in importlib's weakref callback is swallowed ("Exception
    ignored", a traceback in the log) and the build goes on: it is retried by SIGALRM instead."""
    from types import SimpleNamespace

    from qwen_vla_ros.nodes.common import _ShutdownRequest

    def frame(filename, name, back=None):
        return SimpleNamespace(f_code=SimpleNamespace(co_filename=filename, co_name=name), f_back=back)

    inside = frame("<frozen importlib._bootstrap>", "cb", frame("model.py", "load"))
    request = _ShutdownRequest()
    try:
        request(signal.SIGINT, inside)  # does not raise where it would be swallowed
        assert request.signal == signal.SIGINT and signal.getitimer(signal.ITIMER_REAL)[0] > 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    with pytest.raises(KeyboardInterrupt):
        request.retry(signal.SIGALRM, frame("model.py", "load"))
    assert request.signal == signal.SIGINT  # the retry keeps the signal that asked
    request.building = False
    request.retry(signal.SIGALRM, frame("model.py", "load"))  # once spinning: the flag only


def test_call_service_returns_the_reply_and_makes_a_refusal_an_error(ros_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_srvs.srv import SetBool

    from qwen_vla_ros.nodes.common import call_service

    def answer(request, response):
        response.success, response.message = request.data, "accepted" if request.data else "not now: busy"
        return response

    server, caller = Node("refusing_server", context=ros_context), Node("caller", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    try:
        server.create_service(SetBool, "ask", answer)
        client = caller.create_client(SetBool, "ask")
        for node in (server, caller):
            executor.add_node(node)
        waited: list[str] = []

        def wait(done, what):  # spins until done; the session's deadline is not under test here
            waited.append(what)
            while not done():
                executor.spin_once(timeout_sec=0.05)

        assert call_service(client, SetBool.Request(data=True), "asking nicely", wait).message == "accepted"
        assert waited == ["waiting for ask", "asking nicely"]
        with pytest.raises(RuntimeError, match="ask refused while asking again: not now: busy"):
            call_service(client, SetBool.Request(data=False), "asking again", wait)
    finally:
        executor.shutdown()
        server.destroy_node()
        caller.destroy_node()
