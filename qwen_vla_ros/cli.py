"""`qwen-vla`: the package's command line. Each verb lives in its own module; this file dispatches.

Verbs import their heavy dependencies (torch, rclpy) lazily so `qwen-vla check-embodiment`
answers in a fraction of a second on a machine without either.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# verb -> (module, help, argument function, run function)
VERBS: dict[str, tuple[str, str, str, str]] = {
    "demo": (
        "qwen_vla_ros.nodes.sim_episodes",
        "run the whole graph on the simulated ALOHA for one episode; writes pictures and a summary",
        "add_arguments",
        "demo",
    ),
    "eval": (
        "qwen_vla_ros.nodes.sim_episodes",
        "closed-loop evaluation: N sim episodes through the ROS graph; success, latency, smoothness",
        "add_eval_arguments",
        "evaluate",
    ),
    "compare": (
        "qwen_vla_ros.eval_compare",
        "compare two eval runs of one task seed by seed (exact McNemar test on the seeds they disagree on)",
        "add_arguments",
        "run",
    ),
    "probe": (
        "qwen_vla_ros.training.grounding_probe",
        "held-out grounding scenes: does the policy point at, and plan for, the object it is told?",
        "add_arguments",
        "run",
    ),
    "bringup": (
        "qwen_vla_ros.bringup",
        "start the node graph as processes (no launch_ros needed)",
        "add_arguments",
        "run",
    ),
    "record": (
        "qwen_vla_ros.nodes.recorder_node",
        "record the embodiment's topics into MCAP, one episode per instruction",
        "add_arguments",
        "run",
    ),
    "convert": (
        "qwen_vla_ros.data.convert",
        "convert MCAP recordings to a LeRobot v3.0 dataset (parquet + mp4)",
        "add_arguments",
        "run",
    ),
    "collect": (
        "qwen_vla_ros.demonstrations",
        "run a simulated task's scripted expert for N episodes into a LeRobot v3.0 dataset",
        "add_arguments",
        "run",
    ),
    "recover": (
        "qwen_vla_ros.data.salvage",
        "salvage a recording cut off by a crash (SIGKILL, power loss) into a closed MCAP file",
        "add_arguments",
        "run",
    ),
    "train": (
        "qwen_vla_ros.training.cli",
        "train one stage (t2a, cpt, sft or rl) on one CPU, one GPU or many (accelerate launch)",
        "add_arguments",
        "run",
    ),
    "refit-key-pose": (
        "qwen_vla_ros.training.key_pose_refit_cli",
        "refit a policy's key-pose head on thousands of rendered scenes (backbone and decoder frozen)",
        "add_arguments",
        "run",
    ),
    "check-embodiment": (
        "qwen_vla_ros.embodiment.check_cli",
        "validate embodiment files and print their action layout and topics",
        "add_arguments",
        "run",
    ),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` verb's module is imported (for its arguments)."""
    parser = argparse.ArgumentParser(
        prog="qwen-vla",
        description="Qwen-VLA for ROS 2: run, simulate, record, train and check embodiments.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (module_name, help_text, add_name, run_name) in VERBS.items():
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        verb_parser.set_defaults(_module=module_name, _run=run_name)
        if verb == selected:
            getattr(importlib.import_module(module_name), add_name)(verb_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # bringup only builds process lists: importing it is cheap (no rclpy, no torch)
    from .bringup import ament_prefix_path
    from .ros.dds import use_large_frame_transport

    os.environ["AMENT_PREFIX_PATH"] = ament_prefix_path(os.environ.get("AMENT_PREFIX_PATH", ""))
    use_large_frame_transport()  # for verbs that join the graph in this process (collect, eval)
    selected = next((a for a in argv if a in VERBS), None)
    args = build_parser(selected).parse_args(argv)
    try:
        return int(getattr(importlib.import_module(args._module), args._run)(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
