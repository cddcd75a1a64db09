"""Refit the key-pose head on thousands of rendered scenes, backbone and decoder frozen.

Why: the key pose the head predicts from an episode's first view is the grasp the inference
node executes (control/key_frame_grasp.py), so its precision decides a pick: with the expert's
key pose the same plan lifted the named cube in 30 of 30 held-out scenes, with the head's in
27 of 60, its grasp 1.4 cm from the expert's (median). Phase 2 of the recipe trained the head
on a pool of 400 scenes per task, and its held-out key-pose loss rose after step 1,000 (0.045
-> 0.059): it had learnt the pool. More scenes cost their rendering and the expert's IK (about
0.7 s a scene on one core) and nothing else once the backbone is frozen: a scene's backbone
features never change, so :func:`cache_scenes` computes them once and
:func:`refit_key_pose_head` trains on the cache (3,000 steps of 64 in 143 s on 2 cores).

What trains (:data:`REFIT_PARTS`): the head's attention over the memory, its reading of the
pointed-at token and of that token's place, and its MLP; with a pointer weight, also the
pointer (:data:`POINTER_PARTS`: ``query``, ``point_key``, which token holds the named object),
on the cross-entropy of the token holding the named object's centre (cached with each scene).
Why the pointer: the mobile base's front view is 64 x 64 pixels, 16 image tokens, and its
pointer found the named box's token in 62 % of held-out start views; its stop was nearest the
named box in 121 of 200. Trained on 4,000 cached base views (scratch run from the shipped
policy): 75 % and 159 of 200; the same run without the pointer's loss: 62 % and 140 of 200.
The key pose's embedding that the decoder's blocks read (``token``) and the memory projection
stay as they are: the decoder gets the same kind of token, only closer to the true key pose.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..demonstrations import EVAL_SEED_START
from ..embodiment import Embodiment, load_embodiment
from ..model.flow import masked_mse
from ..model.losses import normalised_key_pose
from ..model.token_grid import nearest_image_tokens
from .errors import TrainingError
from .grounding import BASE_NAMED_OBJECTS, grounding_scenes

#: The key-pose head's parts that the refit trains (model/dit.py KeyPoseHead).
REFIT_PARTS = ("attention", "out", "pointed", "pointed_place")
#: The grounding pointer's parts (the query made from the prompt's last token, and the keys it
#: is compared with), trained too where the refit has a pointer weight.
POINTER_PARTS = ("query_norm", "query", "point_key")
#: Seeds of validation scenes: apart from training scenes, evaluation episodes and `qwen-vla probe`.
VALIDATION_SEEDS = (EVAL_SEED_START + 1_000_000, EVAL_SEED_START + 2_000_000)


@dataclass
class SceneCache:
    """Frozen backbone features of one task's grounding scenes (N rows) and their key poses.

    Attributes:
        task, embodiment: the scenes' task and robot (embodiment name).
        features: (N, L, C) backbone features, float16; mask: (N, L) real tokens;
        token_grid: (N, L, G) each token's place (model/token_grid.py); dim_mask: (N, D).
        key_pose: (N, A) the true key pose, rig units; state: (N, A) the robot's state, rig units.
        seeds: (N,) the scenes' seeds.
        pointer_target: (N,) the token holding the named object's centre (the pointer's target,
            model/token_grid.py nearest_image_tokens).
    """

    task: str
    embodiment: str
    features: torch.Tensor
    mask: torch.Tensor
    token_grid: torch.Tensor
    dim_mask: torch.Tensor
    key_pose: np.ndarray
    state: np.ndarray
    seeds: np.ndarray
    pointer_target: torch.Tensor

    def __len__(self) -> int:
        return len(self.seeds)


def cache_scenes(policy, embodiment: Embodiment, task: str, count: int, *, seeds: tuple[int, int],
                 seed: int = 0, approach_fraction: float = 0.0, batch_size: int = 16) -> SceneCache:
    """Render ``count`` grounding scenes of ``task`` (training/grounding.py; seeds in
    ``[seeds[0], seeds[1])``, each drawn once) with their key poses, and keep the frozen
    backbone's features of each. ``approach_fraction``: share of scenes on the way to the
    key pose (0: every scene at the start pose, where the key-frame grasp reads the head)."""
    if count < 1:
        raise TrainingError(f"{task}: at least one scene to cache, got {count}")
    if seeds[1] - seeds[0] < 2 * count:  # drawing distinct seeds at random needs room
        raise TrainingError(f"{task}: {count} scenes need more than {seeds[1] - seeds[0]} seeds")
    source = grounding_scenes(embodiment, task, approach_fraction=approach_fraction, seed=seed, seeds=seeds,
                              key_poses=True)
    rows, drawn = [], set()
    try:
        while len(drawn) < count:
            batch = []
            while len(batch) < min(batch_size, count - len(drawn)):
                scene = source.sample()
                if scene.seed not in drawn:  # one view per scene: validation stays apart
                    drawn.add(scene.seed)
                    batch.append(scene)
            rows.append(_features(policy, embodiment, batch))
    finally:
        source.close()
    return _join(task, embodiment.name, rows)


def _features(policy, embodiment: Embodiment, scenes: list) -> dict:
    with torch.inference_mode():
        prepared = policy.prepare_observations([s.observation for s in scenes], embodiment)
        features = policy.backbone(prepared.inputs)
        cameras = torch.tensor([embodiment.camera_names.index(s.camera) for s in scenes])
        points = torch.tensor([s.image_xy for s in scenes], dtype=torch.float32)
        pointed = nearest_image_tokens(features.token_grid, cameras, points)
    return {"features": features.features.half().cpu(), "mask": features.mask.bool().cpu(),
            "token_grid": features.token_grid.float().cpu(), "dim_mask": prepared.dim_mask.float().cpu(),
            "key_pose": np.stack([s.key_pose for s in scenes]),
            "state": np.stack([np.asarray(s.observation.state, dtype=np.float64) for s in scenes]),
            "seeds": np.array([s.seed for s in scenes]), "pointer_target": pointed.long().cpu()}


def features_fingerprint(policy, embodiment: Embodiment) -> str:
    """What a scene's cached features depend on beside the scene (sha256, hex): the backbone's
    weights, the policy's config (its processor's settings) and the robot's prompt and cameras."""
    digest = hashlib.sha256()
    for name, tensor in sorted(policy.backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(json.dumps(policy.config.to_dict(), sort_keys=True, default=str).encode())
    digest.update(embodiment.prompt.encode())
    digest.update(repr([(c.name, tuple(c.image_size)) for c in embodiment.cameras]).encode())
    return digest.hexdigest()


def save_scene_cache(cache: SceneCache, path: Path, policy, embodiment: Embodiment) -> None:
    """Write ``cache`` with the fingerprint of what its features came from (atomically: a run
    killed while writing leaves no half file for the next one to read)."""
    partial_path = path.with_name(path.name + ".partial")
    torch.save({"fingerprint": features_fingerprint(policy, embodiment), "cache": vars(cache)}, partial_path)
    partial_path.replace(path)


def load_scene_cache(path: Path, policy, embodiment: Embodiment) -> SceneCache | None:
    """The cache at ``path`` if its features came from this backbone, config and robot, else
    None (render again). The file is a pickle: read only folders this user wrote."""
    saved = torch.load(path, weights_only=False)
    if not isinstance(saved, dict) or saved.get("fingerprint") != features_fingerprint(policy, embodiment):
        return None
    return SceneCache(**saved["cache"])


def concat(caches: list[SceneCache]) -> SceneCache:
    """Caches of one task and robot as one (tokens padded to the longest)."""
    if len({(c.task, c.embodiment) for c in caches}) != 1:
        raise TrainingError("concat joins caches of one task and robot")
    return _join(caches[0].task, caches[0].embodiment, [vars(c) for c in caches])


def _join(task: str, embodiment: str, rows: list[dict]) -> SceneCache:
    length = max(r["features"].shape[1] for r in rows)
    return SceneCache(
        task, embodiment,
        features=torch.cat([_pad_tokens(r["features"], length) for r in rows]),
        mask=torch.cat([_pad_tokens(r["mask"], length) for r in rows]),
        token_grid=torch.cat([_pad_tokens(r["token_grid"], length) for r in rows]),
        dim_mask=torch.cat([r["dim_mask"] for r in rows]),
        key_pose=np.concatenate([r["key_pose"] for r in rows]),
        state=np.concatenate([r["state"] for r in rows]),
        seeds=np.concatenate([r["seeds"] for r in rows]),
        pointer_target=torch.cat([r["pointer_target"] for r in rows]),
    )


def _pad_tokens(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """(B, L, ...) -> (B, length, ...): padding tokens appended (masked out by ``mask``)."""
    missing = length - tensor.shape[1]
    if missing <= 0:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((tensor.shape[0], missing, *tensor.shape[2:]))], dim=1)


def merge(caches: list[SceneCache]) -> dict[str, torch.Tensor]:
    """Every cache's rows as one set of model inputs (tokens padded to the longest): features,
    mask, token_grid, dim_mask (their key poses: :func:`targets`)."""
    length = max(c.features.shape[1] for c in caches)
    return {
        "features": torch.cat([_pad_tokens(c.features, length) for c in caches]),
        "mask": torch.cat([_pad_tokens(c.mask, length) for c in caches]),
        "token_grid": torch.cat([_pad_tokens(c.token_grid, length) for c in caches]),
        "dim_mask": torch.cat([c.dim_mask for c in caches]),
    }


def targets(policy, caches: list[SceneCache]) -> torch.Tensor:
    """The caches' true key poses normalised as the head predicts them (sum N, D)."""
    rows = []
    for cache in caches:
        embodiment = load_embodiment(cache.embodiment)
        rows.append(normalised_key_pose(policy, {"subgoal": cache.key_pose}, [embodiment] * len(cache),
                                        cache.dim_mask))
    return torch.cat(rows)


def predict(policy, rows: dict[str, torch.Tensor], index: torch.Tensor | slice = slice(None)) -> torch.Tensor:
    """The head's key pose (B, D, normalised) for the rows ``index`` of a :func:`merge` set."""
    decoder = policy.decoder
    _, _, predicted = decoder.condition(rows["features"][index].float(), rows["mask"][index],
                                        rows["dim_mask"][index], rows["token_grid"][index])
    return predicted


def predict_all(policy, rows: dict[str, torch.Tensor], batch_size: int = 256) -> torch.Tensor:
    """:func:`predict` for every row, without gradients, ``batch_size`` rows at a time."""
    with torch.inference_mode():
        return torch.cat([predict(policy, rows, slice(i, i + batch_size))
                          for i in range(0, len(rows["dim_mask"]), batch_size)])


def trainable_parameters(policy, pointer: bool = False) -> list[torch.nn.Parameter]:
    """Freeze the whole policy but the head's :data:`REFIT_PARTS` (and, with ``pointer``, its
    :data:`POINTER_PARTS`); their parameters."""
    head = policy.decoder.key_pose
    if head is None or head.pointed is None:
        raise TrainingError("the refit needs a key-pose head with its grounding pointer (DiTConfig.grounding)")
    policy.requires_grad_(False)
    chosen = []
    for name in REFIT_PARTS + (POINTER_PARTS if pointer else ()):
        module = getattr(head, name)
        module.requires_grad_(True)
        chosen.extend(module.parameters())
    return chosen


def cached_key_poses(policy, cache: SceneCache) -> np.ndarray:
    """The head's key pose for every cached scene (N, A), rig units as ``cache.key_pose``."""
    embodiment = load_embodiment(cache.embodiment)
    predicted = predict_all(policy, merge([cache]))[:, : embodiment.action_dim].float().cpu().numpy()
    stats = policy.normalization_for(embodiment)
    return np.stack([stats.unnormalize_actions(row) for row in predicted])


def grasp_errors(cache: SceneCache, predicted: np.ndarray, model=None) -> np.ndarray:
    """Per scene, how far a predicted key pose (N, A, rig units) is from the true one (m):
    ALOHA, the tool centre point of the arm the true key pose moves (forward kinematics;
    ``model``: the simulator's MuJoCo model); a mobile base, the stop (x, y)."""
    if cache.task in BASE_NAMED_OBJECTS:
        return np.linalg.norm(predicted[:, :2] - cache.key_pose[:, :2], axis=1)
    return _tool_point_errors(load_embodiment(cache.embodiment), model, predicted, cache)


def _tool_point_errors(embodiment: Embodiment, model, predicted: np.ndarray, cache: SceneCache) -> np.ndarray:
    from ..sim.aloha_conventions import SIDES
    from ..sim.arm_ik import ArmIK

    slices = embodiment.group_slices
    arms = {side: ArmIK(model, side) for side in SIDES}
    errors = []
    for pred, true, state in zip(predicted, cache.key_pose, cache.state, strict=True):
        side = max(SIDES, key=lambda s: float(np.abs(true[slices[f"{s}_arm"]] - state[slices[f"{s}_arm"]]).sum()))
        joints = slices[f"{side}_arm"]
        errors.append(np.linalg.norm(arms[side].tcp_pose(pred[joints])[0] - arms[side].tcp_pose(true[joints])[0]))
    return np.array(errors)


def warmup_cosine(step: int, steps: int, warmup_fraction: float = 0.05) -> float:
    """Learning-rate factor at ``step`` of ``steps``: linear warm-up, then cosine to zero."""
    warmup = max(1, round(warmup_fraction * steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))


def refit_key_pose_head(policy, train: list[SceneCache], steps: int, *, lr: float = 1e-3, batch_size: int = 64,
                        weight_decay: float = 0.01, seed: int = 0, pointer_weight: float = 0.0, on_eval=None,
                        eval_every: int = 0) -> list[dict]:
    """Train the head's :data:`REFIT_PARTS` on the caches' key poses for ``steps`` steps of
    ``batch_size`` rows drawn from all caches at random. Loss: MSE in normalised action units
    (the recipe's key-pose loss), each task's weighted to start at 1 (:func:`_task_weights`);
    with ``pointer_weight`` > 0, plus that times the pointer's cross-entropy on the token of the
    named object (:func:`pointer_loss`), and the pointer's :data:`POINTER_PARTS` train too.
    Learning rate ``lr`` after a warm-up, cosine to zero. ``on_eval(step)`` every
    ``eval_every`` steps and at the end. Returns the train loss every 50 steps."""
    if steps < 1:
        raise TrainingError(f"steps must be >= 1, got {steps}")
    if pointer_weight < 0:
        raise TrainingError(f"pointer_weight must be >= 0, got {pointer_weight}")
    rows, target = merge(train), targets(policy, train)
    pointed = torch.cat([c.pointer_target for c in train])
    weights = _task_weights(policy, train, rows, target)
    parameters = trainable_parameters(policy, pointer=pointer_weight > 0)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, steps=steps))
    generator = torch.Generator().manual_seed(seed)
    history, started = [], time.perf_counter()
    policy.train()
    for step in range(1, steps + 1):
        index = torch.randint(len(target), (batch_size,), generator=generator)
        errors = masked_mse(predict(policy, rows, index), target[index], rows["dim_mask"][index], per_sample=True)
        loss = (errors * weights[index]).mean()
        if pointer_weight > 0:
            loss = loss + pointer_weight * pointer_loss(policy, rows, pointed, index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps:
            history.append({"step": step, "train_loss": round(float(loss.detach()), 6),
                            "seconds": round(time.perf_counter() - started, 1)})
        if on_eval is not None and ((eval_every and step % eval_every == 0) or step == steps):
            policy.eval()
            on_eval(step)
            policy.train()
    policy.eval()
    policy.requires_grad_(False)
    return history


def pointer_loss(policy, rows: dict[str, torch.Tensor], pointed: torch.Tensor,
                 index: torch.Tensor | slice = slice(None)) -> torch.Tensor:
    """Cross-entropy of the grounding pointer on the token holding the named object, rows
    ``index`` of a :func:`merge` set (``pointed``: every row's target token)."""
    logits = policy.decoder.point(rows["features"][index].float(), rows["mask"][index], rows["token_grid"][index])
    return F.cross_entropy(logits.float(), pointed[index])


def pointer_hits(policy, cache: SceneCache, batch_size: int = 256) -> float:
    """Share of the cache's scenes whose pointer peaks on the named object's token."""
    rows = merge([cache])
    with torch.inference_mode():
        peaks = torch.cat([policy.decoder.point(rows["features"][i:i + batch_size].float(), rows["mask"][i:i + batch_size],
                                                rows["token_grid"][i:i + batch_size]).argmax(dim=-1)
                           for i in range(0, len(cache), batch_size)])
    return float((peaks == cache.pointer_target).float().mean())


def _task_weights(policy, caches: list[SceneCache], rows: dict, target: torch.Tensor) -> torch.Tensor:
    """Per row, 1 / its task's key-pose MSE before the refit: every task's loss starts at 1.

    Why: normalised as actions are, key poses differ in scale by task (a base's stop is many
    steps' motion: its MSE starts near 1, an ALOHA grasp's near 0.002), and an unweighted mean
    would spend the head on the base alone."""
    errors = masked_mse(predict_all(policy, rows), target, rows["dim_mask"], per_sample=True)
    weights, start = torch.empty_like(errors), 0
    for cache in caches:
        part = slice(start, start + len(cache))
        weights[part] = 1.0 / errors[part].mean().clamp_min(1e-8)
        start += len(cache)
    return weights


def validation_loss(policy, caches: list[SceneCache]) -> float:
    """Mean key-pose MSE (normalised action units) over every cached row."""
    rows, target = merge(caches), targets(policy, caches)
    return float(masked_mse(predict_all(policy, rows), target, rows["dim_mask"]))
