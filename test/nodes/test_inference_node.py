"""Inference node over real DDS with the tiny model: chunks, new tasks, stop/start/reset, bad input."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from node_test_helpers import wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from qwen_vla_ros.data.images import rgb_to_image_fields
from qwen_vla_ros.nodes.inference_node import InferenceNode
from qwen_vla_ros.nodes.observation_node import ObservationNode
from qwen_vla_ros.observation import MAX_INSTRUCTION_CHARS, ObservationNotReady
from qwen_vla_ros.ros.messages import msg_to_chunk
from qwen_vla_ros.ros.qos import COMMAND, LATCHED, SENSOR

pytestmark = pytest.mark.ros
ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger"]


class Feeder(Node):
    """Fresh sensors at 30/100 Hz; records the chunks the inference node publishes."""

    def __init__(self, context, emb, namespace: str):
        super().__init__("feeder", context=context, namespace=namespace)
        self.chunks: list[JointTrajectory] = []
        self.instruction = self.create_publisher(String, "instruction", LATCHED)
        image = Image(**rgb_to_image_fields(np.full((240, 320, 3), 120, np.uint8)))
        cams = [self.create_publisher(Image, c.topic, SENSOR) for c in emb.cameras]
        states = [self.create_publisher(JointState, s.topic, SENSOR) for s in emb.state_sources]

        def images() -> None:
            image.header.stamp = self.get_clock().now().to_msg()
            for pub in cams:
                pub.publish(image)

        def joints() -> None:
            msg = JointState(name=ARM, position=[0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.05])
            msg.header.stamp = self.get_clock().now().to_msg()
            for pub in states:
                pub.publish(msg)

        self.create_timer(1 / 30, images)
        self.create_timer(1 / 100, joints)
        self.create_subscription(JointTrajectory, "action_chunk", self.chunks.append, COMMAND)
        self.triggers = {name: self.create_client(Trigger, f"inference_node/{name}") for name in ("start", "stop", "reset")}

    def call(self, name: str) -> Trigger.Response:
        future = self.triggers[name].call_async(Trigger.Request())
        assert wait_for(future.done, timeout_s=10)
        return future.result()


@pytest.fixture()
def graph(ros_context, spinner):
    # a namespace per test: a latched instruction of an earlier test's (already destroyed)
    # publisher can still reach a late-joining subscriber while DDS forgets the old participant
    namespace = f"/test_{uuid.uuid4().hex[:8]}"
    params = [Parameter("embodiment", value="aloha_sim")]
    observation = ObservationNode(context=ros_context, parameter_overrides=params, namespace=namespace)
    inference = InferenceNode(observation, context=ros_context, parameter_overrides=params, namespace=namespace)
    feeder = Feeder(ros_context, observation.embodiment, namespace)
    spinner.add(observation, inference, feeder)
    spinner.start()
    yield inference, feeder
    inference.on_shutdown()
    spinner.remove_and_destroy(feeder, inference, observation)


def test_instruction_starts_chunks_stop_holds_and_a_new_task_restarts(graph):
    inference, feeder = graph
    emb = inference.embodiment
    feeder.instruction.publish(String(data="pick up the cube"))
    assert wait_for(lambda: sum(bool(c.points) for c in feeder.chunks) >= 2, timeout_s=60)
    chunk = msg_to_chunk(next(c for c in feeder.chunks if c.points), emb.action_names, emb.dt)
    assert chunk.actions.shape == (emb.chunk_horizon, emb.action_dim)
    assert not inference.policy.predicts_key_poses and inference.last_grasp is None  # tiny: no grasp planned
    assert chunk.dt == pytest.approx(emb.dt)

    assert feeder.call("stop").success
    assert wait_for(lambda: not feeder.chunks[-1].points)  # an empty chunk: hold now
    count = len(feeder.chunks)
    wait_for(lambda: False, timeout_s=0.5)
    assert len(feeder.chunks) == count, "no chunk may follow a stop"

    assert feeder.call("start").success
    assert wait_for(lambda: len(feeder.chunks) > count and feeder.chunks[-1].points, timeout_s=30)

    feeder.instruction.publish(String(data=""))  # an empty instruction stops as well
    assert wait_for(lambda: not feeder.chunks[-1].points)
    assert feeder.call("reset").success


def test_megabyte_instruction_is_refused_and_nothing_moves(graph):
    inference, feeder = graph
    feeder.instruction.publish(String(data="x" * (MAX_INSTRUCTION_CHARS * 500)))
    assert wait_for(lambda: inference.observation.bad_messages >= 1, timeout_s=10)
    wait_for(lambda: False, timeout_s=1.0)
    assert not any(c.points for c in feeder.chunks)
    assert not feeder.call("start").success  # no instruction to act on


def test_async_chunks_continue_the_previous_chunk_exactly(graph):
    """Real-time chunking: each chunk starts on the previous chunk's grid with its frozen actions."""
    inference, feeder = graph
    emb = inference.embodiment
    feeder.instruction.publish(String(data="pick up the cube"))
    assert wait_for(lambda: sum(bool(c.points) for c in feeder.chunks) >= 4, timeout_s=60)
    chunks = [msg_to_chunk(c, emb.action_names, emb.dt) for c in feeder.chunks if c.points]
    for before, after in zip(chunks[1:], chunks[2:], strict=False):  # the first has no predecessor
        offset = round((after.start_time - before.start_time) / emb.dt)
        assert 0 < offset < before.horizon
        assert after.start_time == pytest.approx(before.start_time + offset * emb.dt, abs=1e-6)
        np.testing.assert_allclose(after.actions[0], before.actions[offset], atol=1e-4)


def _headed_tiny_policy(embodiment):
    """The tiny policy with a key-pose head (the shipped demo policy has one; tiny has none)."""
    import torch

    from qwen_vla_ros.model import NormStats, QwenVLAPolicy, tiny_backbone

    policy = QwenVLAPolicy.from_backbone(tiny_backbone("qwen3_5", seed=0), "tiny", seed=0)
    policy.set_normalization(embodiment.name, NormStats.from_limits(embodiment))
    torch.manual_seed(0)
    policy.add_key_pose_input()
    return policy.eval()


def test_a_task_latches_its_first_key_pose_and_a_stop_forgets_it(graph):
    inference, feeder = graph
    inference.policy = _headed_tiny_policy(inference.embodiment)
    # latching is what the decoder does when the grasp is not executed for it
    assert inference.set_parameters([Parameter("key_frame_grasp", value=False)])[0].successful
    feeder.instruction.publish(String(data="pick up the cube"))
    assert wait_for(lambda: sum(bool(c.points) for c in feeder.chunks) >= 3, timeout_s=60)
    # the arms stay at home in this test, far from the random head's key pose: never reached
    assert inference.latch.latched == 1 and inference.latch.pose is not None
    assert feeder.call("stop").success
    assert inference.latch.pose is None

    refused = inference.set_parameters([Parameter("key_pose_reach_tolerance", value=-0.1)])[0]
    assert not refused.successful and "positive" in refused.reason
    assert inference.set_parameters([Parameter("latch_key_pose", value=False)])[0].successful
    count = len(feeder.chunks)
    assert feeder.call("start").success
    assert wait_for(lambda: sum(bool(c.points) for c in feeder.chunks[count:]) >= 2, timeout_s=60)
    assert inference.latch.latched == 0  # off: every chunk acts on its own prediction


def test_key_frame_grasp_plays_the_planned_grasp_then_the_policy_acts(graph):
    """The first key pose executed as a plan (control/key_frame_grasp.py): chunks on one grid whose
    actions are the plan's, starting from the measured state; then the decoder's chunks, unlatched."""
    inference, feeder = graph
    emb = inference.embodiment
    inference.policy = _headed_tiny_policy(emb)  # tiny has no key-pose head: it decodes the grasp
    assert inference.policy.predicts_key_poses
    feeder.instruction.publish(String(data="pick up the cube"))

    def chunks():
        return [msg_to_chunk(c, emb.action_names, emb.dt) for c in feeder.chunks if c.points]

    def policy_acts() -> bool:
        grasp = inference.last_grasp
        end = inference.grasp_start_s + grasp.total_steps * emb.dt if grasp is not None else np.inf
        return any(c.start_time >= end - 1e-6 for c in chunks())

    assert wait_for(policy_acts, timeout_s=90)
    grasp, start = inference.last_grasp, inference.grasp_start_s
    planned = [c for c in chunks() if c.start_time < start + grasp.total_steps * emb.dt - 1e-6]
    assert len(planned) >= 2 and planned[0].start_time == pytest.approx(start, abs=1e-6)
    for chunk in planned:
        step = round((chunk.start_time - start) / emb.dt)
        np.testing.assert_allclose(chunk.actions, grasp.actions(step, emb.chunk_horizon), atol=1e-5)
    measured = inference.observation.assembler.assemble(inference.now_s()).state
    assert np.all(np.abs(planned[0].actions[0] - measured) <= emb.step_limits + 1e-6)
    assert inference.latch.latched == 0  # the executed grasp leaves the decoder nothing to latch
    refused = inference.set_parameters([Parameter("key_frame_grasp", value="yes")])[0]
    assert not refused.successful


def test_a_chunk_computed_for_a_replaced_task_is_dropped_and_the_new_task_keeps_its_grasp(graph):
    """A new instruction arriving while the worker computes: the old task's chunk is not
    published, and the new task's grasp is planned from an observation of the new task."""
    inference, feeder = graph
    inference.policy = _headed_tiny_policy(inference.embodiment)
    inference.on_shutdown()  # the worker idles until an instruction: this test plays its part
    inference._worker.join(timeout=30)
    assert not inference._worker.is_alive()
    feeder.instruction.publish(String(data="pick up the cube"))
    assert wait_for(lambda: inference._active and inference.observation.assembler.instruction, timeout_s=30)

    def observe():
        assembled = []

        def complete() -> bool:
            try:
                assembled.append(inference.observation.assembler.assemble(inference.now_s()))
            except ObservationNotReady:
                return False
            return True

        assert wait_for(complete, timeout_s=30)
        return assembled[-1]

    stale_task, stale = inference._task, observe()
    inference._begin_task()  # what a new instruction does, while the old task's chunk is computed
    count = len(feeder.chunks)
    inference._infer(stale, inference.now_s(), 0, stale_task)
    assert inference._grasp_pending and inference.last_grasp is None  # dropped whole

    inference._infer(observe(), inference.now_s(), 0, inference._task)
    assert wait_for(lambda: len(feeder.chunks) > count, timeout_s=30)
    assert inference.last_grasp is not None and not inference._grasp_pending
    # one publisher, reliable and in order: the dropped chunk would have arrived first
    assert wait_for(lambda: inference.chunk_pub.get_subscription_count() > 0, timeout_s=5)
    assert len(feeder.chunks) == count + 1
