"""``qwen-vla train``: run one training stage (t2a, cpt, sft, rl).

    qwen-vla train --stage sft --dataset DATA --embodiment aloha_sim --init tiny --output runs/sft
    qwen-vla train --stage sft ... --max-steps 2000 --resume
    accelerate launch --config_file config/accelerate/ddp_gpu.yaml -m qwen_vla_ros.training.cli \\
        --stage cpt --init runs/t2a/final --output runs/cpt

The stage is a shipped name or a YAML path; flags override its settings, ``--set
key.path=value`` any other (values are read as YAML: ``--set optimizer.lr=3e-4``).
Exit codes: 0 done, 2 bad configuration or arguments, 1 training failed.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import TrainingConfigError, TrainingError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", required=True, help="t2a, cpt, sft, rl, or a stage YAML path")
    parser.add_argument("--dataset", action="append", default=[], metavar="PATH",
                        help="LeRobot v3.0 dataset folder (repeat to mix; replaces the config's list)")
    parser.add_argument("--embodiment", help="embodiment name or YAML path of the datasets / the simulated robot")
    parser.add_argument("--init", default="tiny", help="'tiny' (random tiny model, offline) or a policy folder")
    parser.add_argument("--output", required=True, help="run folder: final/ policy, checkpoints/, summary")
    parser.add_argument("--max-steps", type=int, help="optimizer steps in total (resumed runs included)")
    parser.add_argument("--batch-size", type=int, help="samples per micro-batch and process")
    parser.add_argument("--lr", type=float, help="decoder learning rate")
    parser.add_argument("--seed", type=int, help="seed of data order, noise and tiny models")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any setting, e.g. --set eval.every_steps=50 (repeatable)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_set(items: list[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML)."""
    import yaml

    overrides: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise TrainingConfigError("<--set>", [f"{item!r}: expected KEY=VALUE, e.g. optimizer.lr=3e-4"])
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise TrainingConfigError("<--set>", [f"{key}: value {raw!r} is not valid YAML ({error})"]) from None
        node = overrides
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TrainingConfigError("<--set>", [f"{key}: {part} is set to a value and a section"])
        node[leaf] = value
    return overrides


def build_overrides(args: argparse.Namespace) -> dict:
    """The command line's changes to the stage file, as a nested mapping."""
    from .config import merge_settings

    overrides = parse_set(args.set)
    flags = {
        "embodiment": args.embodiment,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "datasets": [{"path": p} for p in args.dataset] or None,
        "optimizer": {"lr": args.lr} if args.lr is not None else None,
    }
    return merge_settings(overrides, {k: v for k, v in flags.items() if v is not None})


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by the data, checkpoint or settings given (reported without a traceback)."""
    from ..data.errors import DatasetError
    from ..embodiment import EmbodimentError
    from ..model.errors import CheckpointError, MissingNormalizationError, ModelInputError

    return (TrainingError, TrainingConfigError, DatasetError, EmbodimentError, CheckpointError,
            MissingNormalizationError, ModelInputError)


def run(args: argparse.Namespace) -> int:
    from .config import load_stage_config

    try:
        config = load_stage_config(args.stage, build_overrides(args))
    except TrainingConfigError as error:
        print(f"qwen-vla train: {error}", file=sys.stderr)
        return 2
    from .trainer import make_accelerator, train

    try:
        accelerator = make_accelerator(config, cpu=args.cpu)
        summary = train(config, args.init, args.output, resume=args.resume, progress=not args.no_progress,
                        accelerator=accelerator)
    except _user_errors() as error:
        print(f"qwen-vla train: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if accelerator.is_main_process:
        print(summary.to_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m qwen_vla_ros.training.cli`` (and ``accelerate launch -m``)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="qwen-vla train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
