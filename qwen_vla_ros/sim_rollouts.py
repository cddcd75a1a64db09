"""Closed-loop ALOHA episodes of a policy in the simulator without ROS (pure core).

Fast and deterministic (no real-time pacing, chunks executed synchronously): for learning
curves over checkpoints and for tests of the shipped policy. The deployed path stays the
judge: ``qwen-vla eval`` runs episodes through the ROS graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .demonstrations import TASK_EMBODIMENTS, instruction_for, task_goal
from .embodiment import load_embodiment


@dataclass
class RolloutResult:
    seed: int
    instruction: str
    success: bool
    wrong_object: bool
    best_reward: float


class PolicyDriver:
    """A policy acting on an ALOHA sim env one control step at a time, as the deployed graph
    does with synchronous chunks: a chunk is computed from the latest observation, its first
    ``execute_steps`` actions are executed, then the next is computed.

    ``latch``: a :class:`.control.key_pose_latch.KeyPoseLatch` (rig units) or None;
    ``planned_key_poses``: (ablation) key poses offered to the latch in order instead of the
    head's predictions.
    """

    def __init__(self, policy, embodiment, latch=None, execute_steps: int = 25,
                 planned_key_poses: list[np.ndarray] | None = None):
        self.policy, self.embodiment, self.latch = policy, embodiment, latch
        self.execute_steps = execute_steps
        self.planned = list(planned_key_poses) if planned_key_poses is not None else None
        self._queue: list[np.ndarray] = []

    def act(self, observe, seed: int) -> np.ndarray:
        """The next action (rig units). ``observe()`` returns the current observation, called
        only when a new chunk is computed (rendering costs); ``seed`` seeds that chunk's noise."""
        if not self._queue:
            self._queue = list(np.asarray(self._chunk(observe(), seed).actions)[:self.execute_steps])
        return self._queue.pop(0)

    def _chunk(self, observation, seed: int):
        latch = self.latch
        key_pose = latch.key_pose_for(observation.state) if latch is not None else None
        if latch is not None and key_pose is None and self.planned:
            latch.offer(self.planned.pop(0))
            key_pose = latch.pose
        chunk = self.policy.predict_chunk(observation, self.embodiment, seed=seed, key_pose=key_pose)
        if latch is not None and self.planned is None:
            latch.offer(chunk.key_pose)
        return chunk


def aloha_rollouts(policy, task: str, seeds, *, execute_steps: int = 25, episode_steps: int | None = None,
                   goal: str | None = None, latch_key_pose: bool = True,
                   expert_key_poses: bool = False, key_frame_grasp: bool = True) -> list[RolloutResult]:
    """Run ``policy`` on each seed of an ALOHA task; chunks of ``execute_steps`` actions.

    ``goal``: score (and instruct) this colour instead of the seed's own (colour tasks).
    ``latch_key_pose``: without ``key_frame_grasp``, act on the episode's first predicted key
    pose until it is reached (:class:`.control.key_pose_latch.KeyPoseLatch`, as the inference
    node does with ``key_frame_grasp`` off).
    ``expert_key_poses``: an ablation -- the latch is given the scripted expert's key poses of
    the seed (its grasp, then its last pose) instead of the head's predictions, so the failures
    left are the decoder's, not the key-pose head's.
    ``key_frame_grasp``: the grasp is executed, not decoded
    (:class:`.control.key_frame_grasp.KeyFrameGrasp`, as the inference node does by default);
    the policy acts from the close on. With ``expert_key_poses`` the key pose is the expert's.
    """
    from .control.key_frame_grasp import KeyFrameGrasp
    from .sim.experts import expert_for
    from .training.sim_env import AlohaSimEnv

    embodiment = load_embodiment(TASK_EMBODIMENTS[task])
    steps = episode_steps or expert_for(task).episode_steps
    env = AlohaSimEnv(embodiment, task, instruction="")
    results = []
    try:
        for seed in seeds:
            env.reset(seed)
            target = goal or task_goal(task, seed)
            if target is not None:
                env.sim.set_goal(target)
            env.instruction = instruction_for(task, target, seed)
            planned = list(expert_key_poses_of(env, task)) if expert_key_poses else None
            grasp = None
            if key_frame_grasp:
                key_pose = planned[0] if planned else policy.predict_chunk(env.observe(), embodiment, seed=seed).key_pose
                grasp, planned = KeyFrameGrasp(embodiment, env.state(), np.asarray(key_pose)), None
            latched = (latch_key_pose or expert_key_poses) and not key_frame_grasp
            driver = PolicyDriver(policy, embodiment, new_latch(embodiment, latched), execute_steps, planned)
            best, wrong, solved = 0.0, False, False
            for step in range(steps):
                action = grasp.action(step) if grasp is not None else None
                if action is None:
                    action = driver.act(env.observe, seed * 1000 + step)
                result = env.step(action)
                best = max(best, float(env.sim.reward()))
                wrong = wrong or env.sim.wrong_object()
                if result.done:
                    solved = True
                    break
            results.append(RolloutResult(seed, env.instruction, solved, wrong, best))
    finally:
        env.close()
    return results


def new_latch(embodiment, enabled: bool = True):
    """A key-pose latch for ``embodiment`` (None where latching is off)."""
    from .control.key_pose_latch import KeyPoseLatch

    latch = KeyPoseLatch(embodiment)
    return latch if latch.enabled and enabled else None


def expert_key_poses_of(env, task: str) -> np.ndarray:
    """The scripted expert's key poses for the episode just reset, in order (rig units, (K, D)):
    its actions are planned from the objects' poses without stepping the simulator."""
    from .data.keyframes import gripper_slices, keyframes
    from .sim.experts import expert_for

    expert = expert_for(task)
    expert.reset(env.sim)
    actions = np.array([expert.action() for _ in range(expert.episode_steps)])
    return actions[keyframes(actions, gripper_slices(env.embodiment))]
