"""`qwen-vla check-embodiment FILE...`: a summary per valid file, every problem per invalid one."""

from __future__ import annotations

import argparse
import sys

from .loader import EmbodimentError, list_shipped_embodiments, load_embodiment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="embodiment YAML paths or shipped names (default: every shipped embodiment)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only problems and a verdict")


def run(args: argparse.Namespace) -> int:
    files = args.files or list_shipped_embodiments()
    failed = 0
    for name in files:
        try:
            embodiment = load_embodiment(name)
        except EmbodimentError as exc:
            failed += 1
            print(f"INVALID {name}", file=sys.stderr)
            for problem in exc.problems:
                print(f"  - {problem}", file=sys.stderr)
            continue
        print(f"OK {embodiment.name}" if args.quiet else embodiment.summary() + "\n")
    if len(files) > 1:
        print(f"{len(files) - failed} valid, {failed} invalid")
    return 1 if failed else 0
