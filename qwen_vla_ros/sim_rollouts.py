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


def aloha_rollouts(policy, task: str, seeds, *, execute_steps: int = 25, episode_steps: int | None = None,
                   goal: str | None = None, latch_key_pose: bool = True) -> list[RolloutResult]:
    """Run ``policy`` on each seed of an ALOHA task; chunks of ``execute_steps`` actions.

    ``goal``: score (and instruct) this colour instead of the seed's own (colour tasks).
    ``latch_key_pose``: act on the episode's first predicted key pose until it is reached
    (:class:`.control.key_pose_latch.KeyPoseLatch`, as the inference node does by default).
    """
    from .control.key_pose_latch import KeyPoseLatch
    from .sim.experts import expert_for
    from .training.sim_env import AlohaSimEnv

    embodiment = load_embodiment(TASK_EMBODIMENTS[task])
    steps = episode_steps or expert_for(task).episode_steps
    env = AlohaSimEnv(embodiment, task, instruction="")
    latch = KeyPoseLatch(embodiment)
    latch.enabled = latch.enabled and latch_key_pose
    results = []
    try:
        for seed in seeds:
            env.reset(seed)
            target = goal or task_goal(task, seed)
            if target is not None:
                env.sim.set_goal(target)
            env.instruction = instruction_for(task, target, seed)
            observation = env.observe()
            latch.reset()
            best, wrong, solved, step = 0.0, False, False, 0
            while step < steps and not solved:
                chunk = policy.predict_chunk(observation, embodiment, seed=seed * 1000 + step,
                                             key_pose=latch.key_pose_for(observation.state))
                latch.offer(chunk.key_pose)
                for action in np.asarray(chunk.actions)[:execute_steps]:
                    result = env.step(action)
                    best, step = max(best, float(env.sim.reward())), step + 1
                    wrong = wrong or env.sim.wrong_object()
                    solved = solved or result.done
                    if solved or step >= steps:
                        break
                observation = env.observe()
            results.append(RolloutResult(seed, env.instruction, solved, wrong, best))
    finally:
        env.close()
    return results
