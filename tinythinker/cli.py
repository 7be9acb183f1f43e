"""`python -m tinythinker <command>`: the same library calls the app makes.

Each command lives in `tinythinker/commands/<module>.py` with `register(subparsers)` (adds its parser and sets
`func`) so that areas of the library add commands without touching one shared file. Only the module of the
command being run is imported: training modules pull in torch, which costs seconds that `data --help` should not pay.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module in tinythinker.commands, one-line help shown by `tinythinker --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("data", "print a split's size, id fingerprint and rationale coverage"),
    "show": ("data", "print one question with its teacher rationale in the three stage formats"),
    "evaluate": ("evaluate", "run the staged pipeline on a split; accuracy, invalid rate, traces JSONL"),
    "train": ("train", "phase 1: coarse-to-fine SFT on the interval schedule"),
    "reflect": ("reflect", "phase 2: self-reflection with iterative DPO(+NLL)"),
    "store": ("store", "the SQLite annotation store: import, label, queue, stats, export"),
    "teach": ("teach", "generate teacher rationales over an OpenAI-compatible API"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinythinker",
        description="TinyThinker: coarse-to-fine reasoning distillation with self-reflection.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    if command in COMMANDS:
        importlib.import_module(f"tinythinker.commands.{COMMANDS[command][0]}").register(sub)
    else:
        for name, (_, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Library errors are written to be read by a person: show the message, not a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
