"""Chunk publisher over real DDS: rate, limits, Interbotix-style mapping, watchdog, e-stop."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from node_test_helpers import wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, Header
from std_srvs.srv import Trigger
from test_msgs.msg import BasicTypes, UnboundedSequences
from trajectory_msgs.msg import JointTrajectory

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.nodes.chunk_publisher_node import ChunkPublisherNode
from qwen_vla_ros.ros.messages import chunk_to_msg
from qwen_vla_ros.ros.qos import COMMAND, LATCHED, SENSOR
from qwen_vla_ros.types import ActionChunk

pytestmark = pytest.mark.ros
EMBODIMENT = str(Path(__file__).with_name("aloha_mixed_outputs.yaml"))
ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger"]


class Rig(Node):
    """Plays the robot: publishes joint states at 100 Hz, records every command."""

    def __init__(self, context):
        super().__init__("fake_rig", context=context)
        self.emb = load_embodiment(EMBODIMENT)
        self.left_arm: list[tuple[list[str], np.ndarray]] = []
        self.left_gripper: list[float] = []
        self.right_arm: list[np.ndarray] = []
        self.chunk_pub = self.create_publisher(JointTrajectory, "action_chunk", COMMAND)
        self.estop_pub = self.create_publisher(Bool, "e_stop", LATCHED)
        self.state_pubs = [self.create_publisher(JointState, s.topic, SENSOR) for s in self.emb.state_sources]
        self.create_subscription(UnboundedSequences, "/follower_left/commands/joint_group",
                                 lambda m: self.left_arm.append((list(m.string_values), np.array(m.float32_values))), COMMAND)
        self.create_subscription(BasicTypes, "/follower_left/commands/joint_single",
                                 lambda m: self.left_gripper.append(m.float32_value), COMMAND)
        self.create_subscription(JointTrajectory, "/follower_right/arm_controller/joint_trajectory",
                                 lambda m: self.right_arm.append(np.array(m.points[0].positions)), COMMAND)
        self.create_subscription(Float64MultiArray, "/follower_right/gripper_controller/commands", lambda m: None, COMMAND)
        self.pose = [0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.0579]  # what the rig measures, rad
        self.create_timer(0.01, self._publish_state)

    def _publish_state(self) -> None:
        for pub in self.state_pubs:
            msg = JointState(name=ARM, position=list(self.pose))
            msg.header.stamp = self.get_clock().now().to_msg()
            pub.publish(msg)

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def send_chunk(self, actions: np.ndarray, start: float | None = None) -> None:
        chunk = ActionChunk(actions, self.emb.action_names, self.emb.dt, start if start is not None else self.now_s())
        self.chunk_pub.publish(chunk_to_msg(chunk))


@pytest.fixture()
def setup(ros_context, spinner):
    publisher = ChunkPublisherNode(context=ros_context, parameter_overrides=[Parameter("embodiment", value=EMBODIMENT)])
    ticks: list[tuple[float, str]] = []
    original = publisher.loop.tick

    def recording_tick(now, *args, **kwargs):
        result = original(now, *args, **kwargs)
        ticks.append((now, result.cause))
        return result

    publisher.loop.tick = recording_tick
    rig = Rig(ros_context)
    spinner.add(publisher, rig)
    spinner.start()
    assert wait_for(lambda: publisher._measured_state() is not None)
    yield publisher, rig, ticks
    spinner.remove_and_destroy(publisher, rig)


def _wild_chunk(emb, steps: int, rng) -> np.ndarray:
    """Home pose plus large random jumps: far outside step limits, sometimes outside position limits."""
    return emb.home_position + rng.normal(0.0, 0.5, size=(steps, emb.action_dim)).cumsum(axis=0) * 0.05


def test_commands_stay_within_limits_and_use_the_interbotix_field_mapping(setup):
    publisher, rig, _ = setup
    emb, rng = rig.emb, np.random.default_rng(0)
    for _ in range(6):
        rig.send_chunk(_wild_chunk(emb, emb.chunk_horizon, rng))
        wait_for(lambda: False, timeout_s=0.15)
    assert wait_for(lambda: len(rig.left_arm) > 40)
    names = {tuple(n) for n, _ in rig.left_arm}
    assert names == {("arm",)}
    left = np.stack([v for _, v in rig.left_arm]).astype(np.float64)
    lo, hi = emb.position_min[:6], emb.position_max[:6]
    assert np.all(left >= lo - 1e-6) and np.all(left <= hi + 1e-6)
    steps = np.abs(np.diff(left, axis=0))
    assert np.all(steps <= emb.step_limits[:6] + 1e-5), steps.max(axis=0)
    grip = emb.group("left_gripper").gripper
    assert all(grip.command_closed - 1e-6 <= g <= grip.command_open + 1e-6 for g in rig.left_gripper)
    assert any(cause == "run" for _, cause in setup[2])


def test_watchdog_holds_within_two_periods_of_the_timeout(setup):
    publisher, rig, ticks = setup
    emb = rig.emb
    start = rig.now_s() + 0.05
    rig.send_chunk(np.tile(emb.home_position, (10, 1)), start=start)
    ran_out = start + 10 * emb.dt
    deadline = ran_out + emb.chunk_timeout_s
    assert wait_for(lambda: any(c == "watchdog" for _, c in ticks), timeout_s=5)
    assert any(c == "run" for _, c in ticks), "the chunk never played"
    first = min(t for t, c in ticks if c == "watchdog")
    assert deadline <= first <= deadline + 2 * emb.dt


def test_estop_latches_a_hold_until_released(setup):
    publisher, rig, ticks = setup
    emb = rig.emb
    rig.estop_pub.publish(Bool(data=True))
    assert wait_for(lambda: publisher.estop)
    held_from = len(ticks)
    for _ in range(5):
        rig.send_chunk(np.tile(emb.home_position, (emb.chunk_horizon, 1)))
        wait_for(lambda: False, timeout_s=0.1)
    assert {c for _, c in ticks[held_from:]} == {"estop"}
    rig.estop_pub.publish(Bool(data=False))
    assert wait_for(lambda: not publisher.estop)

    def runs_again() -> bool:
        rig.send_chunk(np.tile(emb.home_position, (emb.chunk_horizon, 1)))
        return wait_for(lambda: ticks[-1][1] == "run", timeout_s=0.3)

    assert wait_for(runs_again, timeout_s=5)


def test_chunks_with_wrong_names_or_nan_never_run(setup):
    publisher, rig, ticks = setup
    emb = rig.emb
    wrong = chunk_to_msg(ActionChunk(np.zeros((5, 3)), ["a", "b", "c"], emb.dt, rig.now_s()))
    rig.chunk_pub.publish(wrong)
    nan = np.tile(emb.home_position, (emb.chunk_horizon, 1))
    nan[3, 2] = np.nan
    rig.send_chunk(nan)
    wait_for(lambda: False, timeout_s=0.5)
    assert publisher.loop.stats.chunks_accepted == 0
    assert all(c != "run" for _, c in ticks)


@pytest.mark.parametrize(
    "qos",
    [COMMAND, qos_profile_sensor_data],
    ids=["reliable-volatile (ros2 topic pub)", "best-effort-volatile (joystick)"],
)
def test_a_volatile_publisher_engages_the_estop(setup, qos, record_property):
    """`ros2 topic pub --once /e_stop std_msgs/msg/Bool "data: true"` publishes volatile."""
    publisher, rig, ticks = setup
    volatile = rig.create_publisher(Bool, "e_stop", qos)
    assert wait_for(lambda: volatile.get_subscription_count() >= 1, timeout_s=10)
    sent = time.monotonic()

    def engaged() -> bool:
        volatile.publish(Bool(data=True))  # a best-effort sample may be lost: repeat, as a teleop does
        return wait_for(lambda: publisher.estop_latency_s is not None, timeout_s=0.2)

    assert wait_for(engaged, timeout_s=10)
    latency = time.monotonic() - sent
    assert ticks[-1][1] == "estop"
    record_property("estop_engage_latency_s", latency)
    print(f"e-stop engage latency (publish -> first hold tick): {latency * 1e3:.1f} ms, "
          f"receipt -> hold tick {publisher.estop_latency_s * 1e3:.1f} ms")
    volatile.publish(Bool(data=False))
    assert wait_for(lambda: not publisher.estop, timeout_s=10)


def test_a_stale_state_source_holds_and_names_it(setup):
    publisher, rig, ticks = setup
    emb = rig.emb
    rig.destroy_timer(next(iter(rig.timers)))  # the rig's joint states stop
    rig.send_chunk(np.tile(emb.home_position, (emb.chunk_horizon, 1)))
    assert wait_for(lambda: publisher.loop.last_result.cause == "stale_state", timeout_s=5)
    reason = publisher.loop.last_result.reason
    assert "stale" in reason and "max_age_s" in reason
    assert "/follower_left/joint_states" in reason and "/follower_right/joint_states" in reason


def test_lost_inference_heartbeat_holds_within_the_chunk_timeout(setup):
    publisher, rig, ticks = setup
    emb = rig.emb
    beat_pub = rig.create_publisher(Header, "inference_heartbeat", COMMAND)
    last_beat = [0.0]

    def beat() -> None:
        last_beat[0] = rig.now_s()
        beat_pub.publish(Header())

    beats = rig.create_timer(0.05, beat)
    assert wait_for(lambda: publisher.last_heartbeat is not None)
    horizon = 3 * emb.chunk_horizon  # far longer than the timeout: only the heartbeat can stop it
    rig.send_chunk(np.tile(emb.home_position, (horizon, 1)))
    assert wait_for(lambda: ticks and ticks[-1][1] == "run", timeout_s=5)
    rig.destroy_timer(beats)  # inference "dies"
    stopped = last_beat[0]
    assert wait_for(lambda: ticks[-1][1] == "inference_lost", timeout_s=5), ticks[-5:]
    first = min(t for t, c in ticks if c == "inference_lost")
    assert first - stopped <= emb.chunk_timeout_s + 2 * emb.dt
    assert "heartbeat" in publisher.loop.last_result.reason


def test_reset_stands_aside_while_the_robot_is_moved(setup):
    """Before a simulation reset teleports the arms, ~/reset stops the commands (a hold would
    drag the arms back); the next chunk then starts from where the arms were moved."""
    publisher, rig, ticks = setup
    emb = rig.emb
    start = publisher._measured_state()
    rig.send_chunk(np.tile(start, (emb.chunk_horizon, 1)))
    assert wait_for(lambda: ticks and ticks[-1][1] == "run", timeout_s=5)
    client = rig.create_client(Trigger, "chunk_publisher/reset")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    assert wait_for(future.done, timeout_s=10) and future.result().success
    assert wait_for(lambda: ticks[-1][1] == "released", timeout_s=5)
    quiet_from = len(ticks)
    rig.pose = [0.6, *rig.pose[1:]]  # the left waist "teleports" 0.6 rad
    assert wait_for(lambda: publisher._measured_state()[0] == pytest.approx(0.6), timeout_s=5)
    commands_before = len(rig.left_arm)
    assert wait_for(lambda: len(ticks) > quiet_from + 5, timeout_s=5)
    assert {cause for _, cause in ticks[quiet_from:]} == {"released"}
    assert len(rig.left_arm) <= commands_before + 1  # at most one already on its way
    moved = publisher._measured_state()
    rig.send_chunk(np.tile(moved, (emb.chunk_horizon, 1)))
    assert wait_for(lambda: ticks[-1][1] == "run", timeout_s=5)
    assert wait_for(lambda: abs(rig.left_arm[-1][1][0] - 0.6) < 1e-3, timeout_s=5)
