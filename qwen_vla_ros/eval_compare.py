"""`qwen-vla compare`: two `qwen-vla eval` runs of one task, seed by seed.

Two policies evaluated on the same seeds meet the same scenes, so the fair test of "B is
better than A" looks only at the seeds where they disagree (McNemar's test): with b seeds
that only B solved and c seeds that only A solved, the two-sided exact p-value is the chance
of a split at least as uneven as b : c from a fair coin. Two rates from 50 episodes each, with
their overlapping 95 % intervals, say much less than that (docs/training.md uses this test).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

#: Per-episode outcomes compared (booleans, or ``approached == goal`` for the colour tasks).
OUTCOMES = ("success", "wrong_object", "instructed_object_approached", "other_object_approached")


class CompareError(ValueError):
    """Two evaluations that cannot be compared seed by seed."""


def mcnemar_exact(only_b: int, only_a: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (binomial, p = 1/2)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def episode_outcome(episode: dict, outcome: str) -> bool | None:
    """One episode's outcome; None where it does not apply (no goal: not a colour task)."""
    if outcome in ("success", "wrong_object"):
        return bool(episode.get(outcome, False))
    if not episode.get("goal"):
        return None
    if outcome == "instructed_object_approached":
        return episode.get("approached") == episode["goal"]
    return episode.get("approached") not in (None, episode["goal"])


def _by_scene(evaluation: dict, name: str) -> dict[tuple, dict]:
    """Episodes keyed by (seed, goal): a paired run has two goals per seed."""
    episodes = evaluation.get("per_episode")
    if not episodes:
        raise CompareError(f"{name} has no per_episode list (is it a qwen-vla eval eval.json?)")
    return {(e["seed"], e.get("goal")): e for e in episodes}


def compare(before: dict, after: dict) -> dict:
    """Seed-by-seed comparison of ``after`` against ``before`` (two eval.json contents).

    Raises :class:`CompareError` when the tasks differ or the runs share no scene; scenes in
    one run only are counted and left out (a cut-short run compares on what both saw)."""
    if before.get("task") != after.get("task"):
        raise CompareError(f"different tasks: {before.get('task')!r} vs {after.get('task')!r}")
    a, b = _by_scene(before, "the first run"), _by_scene(after, "the second run")
    shared = sorted(set(a) & set(b), key=lambda key: (key[0], str(key[1])))
    if not shared:
        raise CompareError("the two runs share no seed: evaluate both with the same --first-seed")
    report = {"task": before.get("task"), "models": [before.get("model"), after.get("model")],
              # --param overrides of each run (None: written before eval.json recorded them)
              "node_params": [before.get("node_params"), after.get("node_params")],
              "scenes": len(shared), "only_in_one_run": len(set(a) ^ set(b)), "outcomes": {}}
    for outcome in OUTCOMES:
        pairs = [(episode_outcome(a[k], outcome), episode_outcome(b[k], outcome)) for k in shared]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        if not pairs:
            continue
        only_after = sum(1 for x, y in pairs if y and not x)
        only_before = sum(1 for x, y in pairs if x and not y)
        report["outcomes"][outcome] = {
            "before": sum(x for x, _ in pairs), "after": sum(y for _, y in pairs), "episodes": len(pairs),
            "only_after": only_after, "only_before": only_before,
            "mcnemar_p": round(mcnemar_exact(only_after, only_before), 4),
        }
    return report


def format_report(report: dict) -> str:
    """The comparison as a small table, one outcome a line."""
    lines = [f"{report['task']}: {report['scenes']} shared scenes ({report['only_in_one_run']} in one run only)",
             f"  before: {report['models'][0]} {report['node_params'][0] or ''}",
             f"  after:  {report['models'][1]} {report['node_params'][1] or ''}",
             f"  {'outcome':<30} {'before':>7} {'after':>7} {'+after':>7} {'+before':>8} {'p':>7}"]
    for name, row in report["outcomes"].items():
        lines.append(f"  {name:<30} {row['before']:>3}/{row['episodes']:<3} {row['after']:>3}/{row['episodes']:<3} "
                     f"{row['only_after']:>7} {row['only_before']:>8} {row['mcnemar_p']:>7.4f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("before", type=Path, help="eval.json (or its folder) of the first policy")
    parser.add_argument("after", type=Path, help="eval.json (or its folder) of the second policy, same seeds")
    parser.add_argument("--output", type=Path, help="also write the comparison as JSON here")


def _load(path: Path) -> dict:
    path = path / "eval.json" if path.is_dir() else path
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CompareError(f"cannot read {path}: {error}") from error


def run(args: argparse.Namespace) -> int:
    try:
        report = compare(_load(args.before), _load(args.after))
    except CompareError as error:
        print(f"qwen-vla compare: {error}")
        return 2
    print(format_report(report))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0
