"""`qwen-vla probe`: does a policy find the object its instruction names, in held-out scenes?

Closed-loop success mixes grounding (which object), key pose (where the grasp or stop is) and
control. This probe isolates the first two, without the ROS graph, on grounding scenes
(:mod:`.grounding`) drawn from the evaluation seeds, which no demonstration or training scene
uses:

- the grounding pointer: share of scenes whose peak is on the named object's image token
  (``hit``) or next to it (``near``);
- the key-pose head: its prediction against the scene's true key pose (the one a
  demonstration has at that frame), median error in rig units;
- ALOHA: where the key pose puts the grasping arm's tool centre point (forward kinematics of
  the joints): median distance to where the expert's key pose puts it, and to the named
  object, m; the grasping arm is the one whose expert key pose ends nearest the object;
- mobile base: the predicted stop (x, y m, robot frame) nearest the named box among all
  boxes (chance 1/3 with three boxes), and its median distance to the expert's stop, m.

docs/training.md ("Base scenes") used it to find that the base's key pose ignored the colour.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from ..demonstrations import EVAL_SEED_START
from ..embodiment import Embodiment, load_embodiment
from .grounding import (
    NAMED_OBJECTS,
    BaseGroundingScenes,
    GroundingScene,
    grounding_scenes,
    pointer_accuracy,
)

#: Held-out scenes: evaluation seeds (qwen-vla eval starts at EVAL_SEED_START too).
PROBE_SEEDS = (EVAL_SEED_START, EVAL_SEED_START + 1_000_000)


def predicted_key_poses(policy, scenes: list[GroundingScene], embodiment: Embodiment) -> np.ndarray | None:
    """The key-pose head's prediction for each scene (N, action_dim), rig units as the
    scenes' ``key_pose``; None for a policy without the head."""
    with torch.inference_mode():
        prepared = policy.prepare_observations([s.observation for s in scenes], embodiment)
        features = policy.backbone(prepared.inputs)
        _, _, predicted = policy.decoder.condition(features.features, features.mask, prepared.dim_mask,
                                                   features.token_grid)
    if predicted is None:
        return None
    stats = policy.normalization_for(embodiment)
    rows = predicted.float().cpu().numpy()[:, : embodiment.action_dim]
    return np.stack([stats.unnormalize_actions(row) for row in rows])


def boxes_in_robot_frame(world) -> dict[str, np.ndarray]:
    """Every box's centre (x, y m) in the frame of the base's current pose (x ahead, y left)."""
    x, y, yaw = world.pose
    cos, sin = math.cos(yaw), math.sin(yaw)
    boxes = {}
    for colour in world.goals:
        bx, by, _ = world.box_centre(colour)
        dx, dy = bx - x, by - y
        boxes[colour] = np.array([cos * dx + sin * dy, -sin * dx + cos * dy])
    return boxes


def _held_out_scenes(source, count: int) -> tuple[list[GroundingScene], list]:
    """``count`` scenes, and what each needs for scoring, read right after it is drawn (the
    source's simulator moves on): the base's boxes in its frame; the named ALOHA object's
    position (x, y, z m, world frame)."""
    scenes, places = [], []
    for _ in range(count):
        scene = source.sample()
        scenes.append(scene)
        if isinstance(source, BaseGroundingScenes):
            places.append(boxes_in_robot_frame(source.rig.world))
        else:
            sim = source.env.sim
            places.append(np.asarray(sim.object_poses()[NAMED_OBJECTS[source.task](scene.goal)][:3]))
    return scenes, places


def grasp_points(model, predicted: np.ndarray, truth: np.ndarray, objects: list[np.ndarray]) -> dict:
    """ALOHA key poses (N, 14: per side 6 arm joints rad and the gripper, SIDES order) as tool
    centre points of the grasping arm (the side whose expert key pose ends nearest the
    object): median distance of the predicted point to the expert's and to the object, m, and
    how often the prediction moves that arm's point closer to the object than the other's."""
    from ..sim.aloha_conventions import SIDES
    from ..sim.arm_ik import ArmIK

    arms = {side: ArmIK(model, side) for side in SIDES}

    def tcp(pose: np.ndarray, side_index: int) -> np.ndarray:
        joints = np.split(pose, len(SIDES))[side_index][:6]
        return arms[SIDES[side_index]].tcp_pose(joints)[0]

    to_expert, to_object, right_arm = [], [], 0
    for pred, true, target in zip(predicted, truth, objects, strict=True):
        side = int(np.argmin([np.linalg.norm(tcp(true, i) - target) for i in range(len(SIDES))]))
        to_expert.append(np.linalg.norm(tcp(pred, side) - tcp(true, side)))
        reach = [np.linalg.norm(tcp(pred, i) - target) for i in range(len(SIDES))]
        to_object.append(reach[side])
        right_arm += int(np.argmin(reach) == side)
    return {"grasp_tcp_to_expert_m_median": round(float(np.median(to_expert)), 4),
            "grasp_tcp_to_object_m_median": round(float(np.median(to_object)), 4),
            "grasping_arm_nearest": right_arm}


def probe(policy, embodiment: Embodiment, task: str, scenes: int = 60, approach_fraction: float = 0.0,
          seed: int = 0, batch_size: int = 8) -> dict:
    """Grounding and key-pose figures of ``policy`` on ``scenes`` held-out scenes of ``task``
    (``approach_fraction`` 0: every scene at the start pose, where an episode begins)."""
    source = grounding_scenes(embodiment, task, approach_fraction=approach_fraction, seed=seed,
                              seeds=PROBE_SEEDS, key_poses=True)
    try:
        drawn, places = _held_out_scenes(source, scenes)
        model = None if isinstance(source, BaseGroundingScenes) else source.env.sim.model
        report = _score(policy, embodiment, drawn, places, model, batch_size)
    finally:
        source.close()
    return {"task": task, "embodiment": embodiment.name, "scenes": len(drawn), "seeds": list(PROBE_SEEDS),
            "approach_fraction": approach_fraction, **report}


def _score(policy, embodiment: Embodiment, drawn: list[GroundingScene], places: list, model, batch_size: int) -> dict:
    batches = [drawn[i:i + batch_size] for i in range(0, len(drawn), batch_size)]
    pointer = [pointer_accuracy(policy, batch, embodiment) for batch in batches]
    report = {"pointer_hit": _weighted(pointer, batches, "hit"), "pointer_near": _weighted(pointer, batches, "near")}
    predicted = [predicted_key_poses(policy, batch, embodiment) for batch in batches]
    if predicted[0] is None:
        return report
    predicted = np.concatenate(predicted)
    truth = np.stack([s.key_pose for s in drawn])
    report["key_pose_error_median"] = round(float(np.median(np.linalg.norm(predicted - truth, axis=1))), 4)
    if model is not None:
        return {**report, **grasp_points(model, predicted, truth, places)}
    stops = predicted[:, :2]
    report["stop_nearest_named_box"] = int(sum(
        min(boxes, key=lambda c, p=stop: np.linalg.norm(boxes[c] - p)) == scene.goal
        for stop, boxes, scene in zip(stops, places, drawn, strict=True)))
    report["stop_error_m_median"] = round(float(np.median(np.linalg.norm(stops - truth[:, :2], axis=1))), 3)
    return report


def _weighted(results: list[dict], batches: list[list], key: str) -> float:
    total = sum(len(batch) for batch in batches)
    return round(sum(r[key] * len(batch) for r, batch in zip(results, batches, strict=True)) / total, 4)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .grounding import BASE_NAMED_OBJECTS, NAMED_OBJECTS

    parser.add_argument("--model", default="sim_demo", help="checkpoint folder, hub id or 'sim_demo'")
    parser.add_argument("--task", default="pick_color", choices=sorted([*NAMED_OBJECTS, *BASE_NAMED_OBJECTS]))
    parser.add_argument("--embodiment", help="default: the task's robot (aloha_sim; mobile_base for drive_to_color)")
    parser.add_argument("--scenes", type=int, default=60)
    parser.add_argument("--approach-fraction", type=float, default=0.0,
                        help="share of scenes with the robot on its way (0: all at the start pose)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the choice of held-out scenes")
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")


def run(args: argparse.Namespace) -> int:
    from ..model.policy import QwenVLAPolicy
    from ..model.shipped import SHIPPED_MODELS, shipped_model_dir
    from .grounding import BASE_NAMED_OBJECTS

    default = "mobile_base" if args.task in BASE_NAMED_OBJECTS else "aloha_sim"
    embodiment = load_embodiment(args.embodiment or default)
    source = str(shipped_model_dir(args.model)) if args.model in SHIPPED_MODELS else args.model
    policy = QwenVLAPolicy.from_pretrained(source).eval()
    report = probe(policy, embodiment, args.task, args.scenes, args.approach_fraction, args.seed)
    report["model"] = args.model
    print(json.dumps(report, indent=2))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0
