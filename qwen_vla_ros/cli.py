"""`qwen-vla`: the package's command line. Each verb lives in its own module; this file dispatches.

Verbs import their heavy dependencies (torch, rclpy) lazily so `qwen-vla check-embodiment`
answers in a fraction of a second on a machine without either.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb -> (module, help). Each module has `add_arguments(parser)` and `run(args) -> int`.
VERBS: dict[str, tuple[str, str]] = {
    "check-embodiment": (
        "qwen_vla_ros.embodiment.check_cli",
        "validate embodiment files and print their action layout and topics",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen-vla",
        description="Qwen-VLA for ROS 2: run, simulate, record, train and check embodiments.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (module_name, help_text) in VERBS.items():
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        verb_parser.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(verb_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
