"""``qwen-vla refit-key-pose``: refit a policy's key-pose head on many rendered scenes.

    qwen-vla refit-key-pose --init runs/sim_demo/phase3/final --output runs/sim_demo \\
        --config config/training/sim_demo_recipe_key_pose.yaml [--cache runs/sim_demo/scene_cache]

Renders each task's scenes in ``workers`` processes (each keeps the frozen backbone's features),
refits the head (training/key_pose_refit.py), and writes ``OUTPUT/final`` (the policy) and
``OUTPUT/refit_summary.json``: per task, held-out key-pose loss and grasp error before and after,
the train loss curve and what each part cost. Exit codes: 0 done, 2 bad configuration, 1 failed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .errors import TrainingConfigError, TrainingError
from .grounding import BASE_NAMED_OBJECTS, NAMED_OBJECTS, SCENE_SEEDS

#: Scenes one worker renders per job: the progress lines' grain.
SCENES_PER_JOB = 100


@dataclass(frozen=True)
class RefitTask:
    """One task's scenes: ``scenes`` for training, ``approach_fraction`` of them on the way."""

    task: str
    embodiment: str
    scenes: int
    approach_fraction: float = 0.0


@dataclass(frozen=True)
class RefitConfig:
    """A refit's settings (YAML keys of the same names; see the recipe's phase-4 file)."""

    tasks: list[RefitTask] = field(default_factory=list)
    validation_scenes: int = 200  # per task, seeds apart from training and evaluation
    steps: int = 3000
    lr: float = 1.0e-3
    batch_size: int = 64
    weight_decay: float = 0.01
    pointer_weight: float = 0.0  # > 0: the grounding pointer trains too, on the named object's token
    seed: int = 0
    workers: int = 2
    eval_every: int = 500
    description: str = ""

    @classmethod
    def from_yaml(cls, path: str | Path) -> RefitConfig:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TrainingConfigError(str(path), [str(exc)]) from exc
        if not isinstance(raw, dict):
            raise TrainingConfigError(str(path), ["a mapping of settings expected"])
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise TrainingConfigError(str(path), [f"{key}: unknown key" for key in unknown])
        try:
            tasks = [RefitTask(**t) for t in raw.pop("tasks", None) or []]
            config = cls(tasks=tasks, **raw)
        except TypeError as exc:
            raise TrainingConfigError(str(path), [f"tasks: {exc}"]) from exc
        config.validate(str(path))
        return config

    def validate(self, source: str) -> None:
        """Raise TrainingConfigError naming every problem (before any worker starts)."""
        problems = [] if self.tasks else ["tasks: no tasks"]
        for t in self.tasks:
            problems += _task_problems(t)
        for key, kind in (("validation_scenes", int), ("steps", int), ("batch_size", int), ("workers", int),
                          ("eval_every", int), ("seed", int), ("lr", float), ("weight_decay", float),
                          ("pointer_weight", float)):
            value = getattr(self, key)
            if not _is(value, kind):
                problems.append(f"{key}: a number ({kind.__name__}) expected, got {value!r}")
            elif key not in ("eval_every", "seed", "weight_decay", "pointer_weight") and not value > 0:
                problems.append(f"{key}: must be > 0")
            elif key == "pointer_weight" and value < 0:
                problems.append(f"{key}: must be >= 0")
        if problems:
            raise TrainingConfigError(source, problems)


def _is(value, kind: type) -> bool:
    """``value`` is an int (``kind`` int) or any real number (``kind`` float); bools are not."""
    allowed = (int,) if kind is int else (int, float)
    return isinstance(value, allowed) and not isinstance(value, bool)


def _task_problems(t: RefitTask) -> list[str]:
    """What is wrong with one task entry: its name, counts, and whether its robot can render it."""
    from ..data.chunks import waypoint_slices
    from ..embodiment import EmbodimentError, load_embodiment

    if t.task not in {*NAMED_OBJECTS, *BASE_NAMED_OBJECTS}:
        return [f"tasks: {t.task!r} names no object: one of {sorted({*NAMED_OBJECTS, *BASE_NAMED_OBJECTS})}"]
    if not _is(t.scenes, int) or not _is(t.approach_fraction, float) or t.scenes < 1 \
            or not 0.0 <= t.approach_fraction <= 1.0:
        return [f"tasks: {t.task}: scenes >= 1 (an integer) and approach_fraction in [0, 1]"]
    try:
        embodiment = load_embodiment(t.embodiment)
    except (EmbodimentError, OSError) as exc:
        return [f"tasks: {t.task}: embodiment {t.embodiment!r}: {str(exc).splitlines()[-1].strip(' -')}"]
    if t.task in BASE_NAMED_OBJECTS and not waypoint_slices(embodiment):
        return [f"tasks: {t.task}: {t.embodiment} has no base_waypoints group (a mobile base task)"]
    if t.task in NAMED_OBJECTS and not {"left_arm", "right_arm"} <= set(embodiment.group_slices):
        return [f"tasks: {t.task}: {t.embodiment} is not a two-armed ALOHA (left_arm, right_arm)"]
    return []


def _jobs(task: RefitTask, count: int, seeds: tuple[int, int], seed: int) -> list[tuple]:
    """Jobs of at most SCENES_PER_JOB scenes, each on its own slice of ``seeds`` (no scene twice)."""
    parts = -(-count // SCENES_PER_JOB)
    edges = np.linspace(seeds[0], seeds[1], parts + 1).astype(int)
    sizes = [count // parts + (i < count % parts) for i in range(parts)]
    return [(task.task, task.embodiment, size, (int(edges[i]), int(edges[i + 1])), seed + i, task.approach_fraction)
            for i, size in enumerate(sizes)]


_WORKER: dict = {}


def _start_worker(init: str, cache_dir: str | None = None) -> None:
    import torch

    from ..model.policy import QwenVLAPolicy

    torch.set_num_threads(1)  # one process per core
    _WORKER["policy"] = QwenVLAPolicy.from_pretrained(init).eval()
    _WORKER["cache_dir"] = None if cache_dir is None else Path(cache_dir)


def _run_job(job: tuple):
    from ..embodiment import load_embodiment
    from .key_pose_refit import cache_scenes, load_scene_cache, save_scene_cache

    task, embodiment, count, seeds, seed, approach = job
    policy, folder = _WORKER["policy"], _WORKER["cache_dir"]
    robot = load_embodiment(embodiment)
    path = None if folder is None else folder / f"{task}-{embodiment}-{count}-{seeds[0]}-{seeds[1]}-{seed}-{approach}.pt"
    if path is not None and path.is_file():
        cached = load_scene_cache(path, policy, robot)
        if cached is not None:
            return cached, True
    cache = cache_scenes(policy, robot, task, count, seeds=seeds, seed=seed, approach_fraction=approach)
    if path is not None:
        save_scene_cache(cache, path, policy, robot)
    return cache, False


def cache_all(init: str, config: RefitConfig, log=print, cache_dir: Path | None = None) -> tuple[dict, dict]:
    """Training and validation caches per task, rendered by ``config.workers`` processes; with
    ``cache_dir``, each job's scenes are kept there and read back by a later run whose backbone
    and cameras are the same (key_pose_refit.save_scene_cache)."""
    from .key_pose_refit import VALIDATION_SEEDS, concat

    jobs = []
    for t in config.tasks:
        jobs += [("train", j) for j in _jobs(t, t.scenes, SCENE_SEEDS, config.seed)]
        jobs += [("val", j) for j in _jobs(t, config.validation_scenes, VALIDATION_SEEDS, config.seed)]
    parts: dict[tuple[str, str], list] = {}
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # MuJoCo, EGL and torch threads: fresh processes
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    folder = None if cache_dir is None else str(cache_dir)
    with context.Pool(config.workers, initializer=_start_worker, initargs=(init, folder)) as pool:
        results = pool.imap(_run_job, [j for _, j in jobs])
        for done, ((split, job), (cache, reused)) in enumerate(zip(jobs, results, strict=True), 1):
            parts.setdefault((split, job[0]), []).append(cache)
            how = "read from the cache" if reused else "rendered"
            log(f"[refit] {done}/{len(jobs)} scene jobs ({split} {job[0]}, {how}), {time.perf_counter() - started:.0f} s")
    joined = {key: concat(caches) for key, caches in parts.items()}
    train = {task: c for (split, task), c in joined.items() if split == "train"}
    val = {task: c for (split, task), c in joined.items() if split == "val"}
    return train, val


def _aloha_env(config: RefitConfig):
    """The simulated ALOHA (for forward kinematics of its arms), or None without ALOHA tasks."""
    aloha = [t for t in config.tasks if t.task in NAMED_OBJECTS]
    if not aloha:
        return None
    from ..embodiment import load_embodiment
    from .sim_env import AlohaSimEnv

    return AlohaSimEnv(load_embodiment(aloha[0].embodiment), aloha[0].task, instruction="")


def _scores(policy, val: dict, model) -> dict:
    from .key_pose_refit import cached_key_poses, grasp_errors, pointer_hits, validation_loss

    report = {}
    for task, cache in val.items():
        errors = grasp_errors(cache, cached_key_poses(policy, cache), model)
        report[task] = {"key_pose_loss": round(validation_loss(policy, [cache]), 6),
                        "error_m_median": round(float(np.median(errors)), 4),
                        "error_under_1cm": round(float(np.mean(errors < 0.01)), 3),
                        "pointer_hit": round(pointer_hits(policy, cache), 3)}
    return report


def refit(init: str, output: Path, config: RefitConfig, log=print, cache_dir: Path | None = None) -> dict:
    """Cache (in ``cache_dir`` too, where given), refit, save ``output/final``; returns (and
    writes) the summary."""
    from ..model.policy import QwenVLAPolicy
    from .key_pose_refit import refit_key_pose_head

    started = time.perf_counter()
    train, val = cache_all(init, config, log, cache_dir)
    cached = time.perf_counter() - started
    policy = QwenVLAPolicy.from_pretrained(init).eval()
    env = _aloha_env(config)
    model = None if env is None else env.sim.model
    try:
        before, evals = _scores(policy, val, model), []

        def on_eval(step: int) -> None:
            evals.append({"step": step, **_scores(policy, val, model)})
            log(f"[refit] step {step}: {json.dumps(evals[-1])}")

        log(f"[refit] before: {json.dumps(before)}")
        history = refit_key_pose_head(policy, list(train.values()), config.steps, lr=config.lr,
                                      batch_size=config.batch_size, weight_decay=config.weight_decay,
                                      seed=config.seed, pointer_weight=config.pointer_weight, on_eval=on_eval,
                                      eval_every=config.eval_every)
    finally:
        if env is not None:
            env.close()
    policy.save_pretrained(output / "final")
    summary = {"init": init, "config": asdict(config), "scenes": {t: len(c) for t, c in train.items()},
               "validation_scenes": {t: len(c) for t, c in val.items()},
               "seconds": {"caching": round(cached), "training": round(history[-1]["seconds"]),
                           "total": round(time.perf_counter() - started)},
               "validation_before": before, "validation_during": evals, "train_loss": history}
    (output / "refit_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--init", required=True, help="policy folder (or 'sim_demo') whose key-pose head is refit")
    parser.add_argument("--output", required=True, type=Path, help="run folder: final/ policy, refit_summary.json")
    parser.add_argument("--config", default="config/training/sim_demo_recipe_key_pose.yaml", help="refit YAML")
    parser.add_argument("--steps", type=int, help="override the config's steps")
    parser.add_argument("--workers", type=int, help="override the config's rendering processes")
    parser.add_argument("--cache", type=Path, help="folder that keeps the rendered scenes' features: a later "
                        "refit with the same backbone reads them instead of rendering (files are pickles: "
                        "only folders this user wrote)")


def run(args: argparse.Namespace) -> int:
    try:
        config = RefitConfig.from_yaml(args.config)
        overrides = {k: v for k, v in (("steps", args.steps), ("workers", args.workers)) if v is not None}
        if overrides:
            config = RefitConfig(**{**vars(config), **overrides})
            config.validate("command line")
    except TrainingConfigError as exc:
        print(f"qwen-vla refit-key-pose: {exc}", file=sys.stderr)
        return 2
    from ..model.shipped import SHIPPED_MODELS, shipped_model_dir

    init = str(shipped_model_dir(args.init)) if args.init in SHIPPED_MODELS else args.init
    args.output.mkdir(parents=True, exist_ok=True)
    try:
        summary = refit(init, args.output, config, cache_dir=args.cache)
    except TrainingError as exc:
        print(f"qwen-vla refit-key-pose: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: summary[k] for k in ("scenes", "seconds", "validation_before")}, indent=1))
    print(f"[refit] after: {json.dumps(summary['validation_during'][-1])}")
    return 0
