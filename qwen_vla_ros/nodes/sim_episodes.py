"""`qwen-vla demo` and `qwen-vla eval`: the whole graph on the simulated rig, episodes end by themselves.

Both start the sim bridge, the inference process and the chunk publisher as separate
processes (exactly as `qwen-vla bringup --sim` does), give the instruction on the
instruction topic, and watch with an :class:`EpisodeMonitor`. An episode starts when the
policy's first chunk arrives and lasts ``--seconds`` of simulated time. Between episodes:
an empty instruction (stop), ``chunk_publisher/reset`` (stand aside: no hold drags the arms
back while the sim moves them), ``sim_bridge/reset``, ``inference_node/reset`` (drop the
old scene's readings), then the next instruction.

Episode k runs on seed ``--first-seed + k`` (eval: from ``EVAL_SEED_START``, seeds the
demonstrations never use; demo: ``DEMO_SEEDS``, see there); its instruction is one of the
task's phrasings naming the goal of that seed (colour tasks), unless ``--instruction`` says
otherwise. The default model is the shipped demo policy (``sim_demo``) for the simulated robots.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from std_srvs.srv import Trigger

from ..bringup import Graph, GraphConfig, StopRequest, add_param_argument, parse_node_params
from ..demonstrations import (
    EVAL_SEED_START,
    INSTRUCTIONS,
    TASK_EMBODIMENTS,
    instruction_for,
    task_goal,
)
from ..embodiment import load_embodiment
from ..evaluation import (
    image_strip,
    paired_report,
    percentiles,
    plot_commands,
    summarize,
    task_report,
    write_json,
    write_video,
)
from ..model.shipped import SIM_DEMO
from ..sim.aloha_tasks import CUBE_COLORS
from ..sim.base_scene import BOX_COLORS
from .common import call_service
from .episode_monitor import EpisodeMonitor

UNTRAINED_NOTE = "tiny UNTRAINED policy (random weights): it moves within limits, it is not a trained skill"
DEMO_TASK = "pick_color"
#: The demo's scene per task (held-out seeds, >= EVAL_SEED_START). pick_color's is a held-out
#: seed on which the shipped policy (phase 4), with the inference node's key-frame grasp (its
#: default), lifted the named cube in its 50-episode eval of 2026-12-02, in-process, and in 2 of
#: 2 demo runs (phase 3's policy: both its evals and 3 of 3 demo runs): chosen, as the README
#: says, so that the main command shows the task done; `qwen-vla eval` measures the rate over
#: seeds from EVAL_SEED_START on. (Until 2026-12-02 the demo scene was 100044, chosen for the
#: decoder's grasp, then 100013, which phase 4 lifts in the graph but not in-process.)
#: Other tasks: the first held-out seed.
DEMO_SEEDS = {"pick_color": EVAL_SEED_START + 21}
GOALS = {"pick_color": CUBE_COLORS, "drive_to_color": BOX_COLORS}
#: Simulated seconds per episode (the scripted experts finish in about these times).
TASK_SECONDS = {"transfer_cube": 8.0, "insertion": 8.0, "pick_color": 6.0, "drive_to_color": 12.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embodiment", help="default: the task's robot (aloha_sim; mobile_base for drive_to_color)")
    parser.add_argument("--model", default=SIM_DEMO,
                        help="checkpoint folder, hub id, 'sim_demo' (the shipped demo policy) or 'tiny' (untrained)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--task", default=DEMO_TASK, choices=sorted(INSTRUCTIONS))
    parser.add_argument("--instruction", help="default: a phrasing of the task naming the seed's goal")
    parser.add_argument("--seconds", type=float, help="episode length, simulated s (default per task)")
    parser.add_argument("--first-seed", type=int,
                        help="seed of the first episode; episode k uses first-seed + k (default: eval "
                             f"{EVAL_SEED_START}, demo the task's demo scene, {DEMO_SEEDS})")
    parser.add_argument("--video", type=int, default=1, help="write an mp4 of the cameras of the first N episodes")
    parser.add_argument("--strategy", default="async", choices=["synchronous", "temporal_ensemble", "async"])
    parser.add_argument("--output", type=Path, help="output folder (default outputs/<verb>-<time>)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up when one wait (model loading, a reset, an episode) takes longer than "
                             "this many wall s: a stalled graph, not the length of the run")
    add_param_argument(parser)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--paired", action="store_true",
                        help="colour tasks: each scene twice, with its goal and with another colour "
                             "(instruction following: does the robot act on the object it is told?)")


def _resolve(args: argparse.Namespace, demo: bool = False) -> argparse.Namespace:
    """Fill the task-dependent defaults (robot, episode length, first seed)."""
    args.embodiment = args.embodiment or TASK_EMBODIMENTS[args.task]
    args.seconds = args.seconds or TASK_SECONDS[args.task]
    if args.first_seed is None:
        args.first_seed = DEMO_SEEDS.get(args.task, EVAL_SEED_START) if demo else EVAL_SEED_START
    return args


def _instruction(args: argparse.Namespace, seed: int) -> str:
    return args.instruction or instruction_for(args.task, task_goal(args.task, seed), seed)


def _episode_plan(args: argparse.Namespace) -> list[tuple[int, str | None, bool]]:
    """(seed, goal, same scene as the episode before) per episode. ``--paired``: each seed
    with its own goal, then the same scene with the next colour of the task."""
    plan = []
    for k in range(args.episodes):
        seed = args.first_seed + k
        goal = task_goal(args.task, seed)
        plan.append((seed, goal, False))
        if args.paired and goal is not None:
            colours = list(GOALS[args.task])
            plan.append((seed, colours[(colours.index(goal) + 1) % len(colours)], True))
    return plan


class _Session:
    """The processes, the monitor and an executor, with progress printed as it goes."""

    def __init__(self, args: argparse.Namespace, out: Path):
        self.args = args
        self.embodiment = load_embodiment(args.embodiment)
        config = GraphConfig(
            embodiment=args.embodiment, model=args.model, device=args.device, sim=True,
            strategy=args.strategy, extra=parse_node_params(args.param),
        )
        config.extra.setdefault("sim_bridge", {}).update(task=args.task, seed=args.first_seed)
        self.graph = Graph(config, log_dir=out / "logs")

    def __enter__(self) -> _Session:
        # our own handlers: Ctrl-C/SIGTERM end the episode loop, then __exit__ stops the graph
        self.stop_request = StopRequest()
        self.graph.start()
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.monitor = EpisodeMonitor(self.embodiment)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.monitor)
        return self

    def __exit__(self, *exc) -> None:
        self.graph.stop()
        self.monitor.destroy_node()
        rclpy.shutdown()

    def spin_until(self, done, what: str) -> None:
        last_print, deadline = 0.0, time.monotonic() + self.args.timeout
        while not done():
            self.executor.spin_once(timeout_sec=0.05)
            self.stop_request.raise_if_set()
            if self.graph.exited():
                raise RuntimeError(f"a node process exited: {self.graph.exited()} (see {self.graph.log_dir})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out while {what}: over {self.args.timeout:g} wall s "
                                   f"(see logs in {self.graph.log_dir})")
            if time.monotonic() - last_print > 2.0:
                last_print = time.monotonic()
                rec = self.monitor.record
                print(
                    f"  [{what}] sim t={self.monitor.now_s():6.2f} s  commands={len(rec.commands)}  "
                    f"chunks={len(rec.chunk_times)}  success={rec.success}",
                    flush=True,
                )

    def call(self, client, what: str) -> None:
        """Call a Trigger service and wait for its reply; a refusal is an error."""
        call_service(client, Trigger.Request(), what, self.spin_until)

    def episode(self, instruction: str, seconds: float, reset: bool, same_scene: bool = False) -> dict:
        """One episode; ``reset``: a new scene first (the next seed), or with ``same_scene``
        the current seed's scene again from its start (paired instructions)."""
        monitor = self.monitor
        if reset:
            monitor.instruct("")  # stop the old task before the world jumps back
            # the chunk publisher stands aside while the sim moves the arms (its hold would
            # drag them back to the old pose); the inference node then drops the old scene
            self.call(monitor.release_client, "releasing the arms")
            self.call(monitor.restart_client if same_scene else monitor.reset_client, "resetting the sim")
            self.call(monitor.policy_reset_client, "resetting the policy")
        monitor.instruct(instruction)
        monitor.begin(instruction)
        self.spin_until(lambda: len(monitor.record.chunk_times) > 0, "waiting for the first chunk (model loading)")
        monitor.begin(instruction)  # the episode starts with the policy's first chunk
        wall = time.monotonic()
        self.spin_until(lambda: monitor.now_s() - monitor.record.start_time >= seconds, "episode")
        record = monitor.end()
        record.wall_seconds = time.monotonic() - wall
        return record


def _output_dir(args: argparse.Namespace, verb: str) -> Path:
    out = args.output or Path("outputs") / f"{verb}-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _model_note(args: argparse.Namespace) -> str:
    if args.model == "tiny":
        return UNTRAINED_NOTE
    if args.model == SIM_DEMO:
        return "checkpoint sim_demo (the shipped demo policy, models/sim_demo)"
    return f"checkpoint {args.model}"


def run_demo(args: argparse.Namespace) -> int:
    args = _resolve(args, demo=True)
    out = _output_dir(args, "demo")
    instruction = _instruction(args, args.first_seed)
    print(f"[demo] {args.embodiment} in simulation, task {args.task}, seed {args.first_seed}, model: {_model_note(args)}")
    print(f"[demo] instruction: '{instruction}'; {args.seconds:g} simulated s; output in {out}")
    with _Session(args, out) as session:
        record = session.episode(instruction, args.seconds, reset=False)
    summary = {"task": args.task, "seed": args.first_seed, **summarize(record, session.embodiment, _model_note(args))}
    write_json(out / "summary.json", summary)
    plot_commands(record, session.embodiment, out / "commands_vs_measured.png")
    image_strip(record, out / "cameras.png")
    if args.video:
        write_video(record, out / "cameras.mp4")
    print(json.dumps(summary, indent=2))
    print(f"[demo] wrote {out}/summary.json, commands_vs_measured.png, cameras.png, cameras.mp4, logs/")
    if args.model == "tiny":
        print("[demo] NOTE: " + UNTRAINED_NOTE + ". Train one with `qwen-vla train` (docs/training.md).")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    args = _resolve(args)
    out = _output_dir(args, "eval")
    print(f"[eval] {args.episodes} episodes of {args.task} on {args.embodiment}, seeds {args.first_seed}.."
          f"{args.first_seed + args.episodes - 1}, {args.seconds:g} s each, model: {_model_note(args)}")
    episodes, plan = [], _episode_plan(args)
    try:
        with _Session(args, out) as session:
            for i, (seed, goal, same_scene) in enumerate(plan):
                instruction = args.instruction or instruction_for(args.task, goal, seed)
                record = session.episode(instruction, args.seconds, reset=i > 0, same_scene=same_scene)
                summary = {"seed": seed, "goal": goal, **summarize(record, session.embodiment, _model_note(args))}
                episodes.append(summary)
                if i < args.video:
                    write_video(record, out / f"episode-{seed}.mp4")
                print(f"[eval] episode {i + 1} (seed {seed}, '{summary['instruction']}'): success={record.success} "
                      f"wrong_object={record.wrong_object} approached={record.approached} reward={record.reward:g}",
                      flush=True)
    except (RuntimeError, TimeoutError, KeyboardInterrupt) as exc:
        if episodes:  # the finished episodes are kept, marked as a partial run
            report = _eval_report(args, episodes, stopped=f"after {len(episodes)} of {len(plan)} episodes: {exc!r}")
            _write_eval(report, episodes, out)
        raise
    _write_eval(_eval_report(args, episodes), episodes, out)
    return 0


def _eval_report(args: argparse.Namespace, episodes: list[dict], stopped: str | None = None) -> dict:
    latencies = [e["inference_latency_ms"]["p50"] for e in episodes if e["inference_latency_ms"]["p50"]]
    ratios = [e["smoothness_in_step_limits"]["ratio"] for e in episodes if e["smoothness_in_step_limits"]["ratio"]]
    return {
        "task": args.task,
        "embodiment": args.embodiment,
        "model": _model_note(args),
        # what the graph ran with beyond config/params/defaults.yaml (e.g. latch_key_pose=false)
        "strategy": args.strategy,
        "node_params": parse_node_params(args.param),
        "seeds": [args.first_seed, args.first_seed + len({e["seed"] for e in episodes}) - 1],
        **({"stopped": stopped} if stopped else {}),
        "episodes": len(episodes),
        "success_rate": float(np.mean([e["success"] for e in episodes])),
        **task_report(episodes),
        **({"paired_instructions": paired_report(episodes)} if args.paired else {}),
        "inference_latency_ms_p50_per_episode": percentiles(latencies),
        "boundary_to_within_change_ratio": float(np.median(ratios)) if ratios else None,
        "per_episode": episodes,
    }


def _write_eval(report: dict, episodes: list[dict], out: Path) -> None:
    write_json(out / "eval.json", report)
    _plot_eval(episodes, out / "eval.png")
    print(json.dumps({k: v for k, v in report.items() if k != "per_episode"}, indent=2))
    stopped = f" (stopped {report['stopped']})" if "stopped" in report else ""
    print(f"[eval] wrote {out}/eval.json and eval.png{stopped}")


def _plot_eval(episodes: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    idx = np.arange(1, len(episodes) + 1)
    axes[0].bar(idx, [e["reward"] for e in episodes], color=["tab:green" if e["success"] else "tab:gray" for e in episodes])
    axes[0].set(title="reward per episode (green = success)", xlabel="episode")
    b = [e["smoothness_in_step_limits"]["boundary_max"] or 0 for e in episodes]
    w = [e["smoothness_in_step_limits"]["within_max"] or 0 for e in episodes]
    axes[1].bar(idx - 0.2, b, 0.4, label="at chunk boundaries")
    axes[1].bar(idx + 0.2, w, 0.4, label="within chunks")
    axes[1].set(title="largest command change / step limit", xlabel="episode")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _guarded(verb: str, body, args: argparse.Namespace) -> int:
    try:
        return body(args)
    except (RuntimeError, TimeoutError) as exc:
        print(f"[{verb}] FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"[{verb}] interrupted; the node processes were stopped", file=sys.stderr)
        return 130


def demo(args: argparse.Namespace) -> int:
    return _guarded("demo", run_demo, args)


def evaluate(args: argparse.Namespace) -> int:
    return _guarded("eval", run_eval, args)
