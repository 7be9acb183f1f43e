"""`python -m tinythinker <command>`: the same library calls the app makes.

Each command lives in `tinythinker/commands/<name>.py` with `register(subparsers)` (adds its parser and sets
`func`) so that areas of the library add commands without touching one shared file.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("data", "evaluate", "train", "reflect", "store", "teach")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinythinker",
        description="TinyThinker: coarse-to-fine reasoning distillation with self-reflection.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"tinythinker.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"tinythinker.commands.{name}":
                raise
            continue  # an area not installed in this build
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Library errors are written to be read by a person: show the message, not a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
