"""`python -m tinythinker <command>`: the same library calls the app makes.

Each command lives in `tinythinker/commands/<module>.py` with `register(subparsers)` (adds its parser and sets
`func`) so that areas of the library add commands without touching one shared file. Only the module of the
command being run is imported: training modules pull in torch, which costs seconds that `data --help` should not pay.

Errors: a failure the user can cause (bad input, a missing, unreadable or unwritable file, a refused database) ends
in one line, `error: <what and where>`, and exit status 2. Anything else is a bug: one line too, exit status 1, with
its traceback saved to a file the line names. `--debug` (anywhere on the command line) or TINYTHINKER_DEBUG=1 prints
the traceback as well. See docs/BAD_INPUT.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
import sys
import tempfile
import traceback

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


DEBUG_ENV = "TINYTHINKER_DEBUG"
# What a user can cause: every library error type is a ValueError (DataError, StoreError, ...) or a RuntimeError;
# OSError covers files that are missing, unreadable or unwritable; sqlite3.Error a database SQLite refuses.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, RuntimeError, sqlite3.Error)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinythinker",
        description="TinyThinker: coarse-to-fine reasoning distillation with self-reflection.",
    )
    parser.add_argument("--debug", action="store_true",
                        help=f"print the traceback of an error, not just its one line (also: {DEBUG_ENV}=1); "
                             "may be given anywhere on the command line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    if command in COMMANDS:
        importlib.import_module(f"tinythinker.commands.{COMMANDS[command][0]}").register(sub)
    else:
        for name, (_, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text)
    return parser


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """(debug?, argv without --debug). argparse never takes "--debug" as an option's value, so the flag is taken
    from anywhere before a lone "--"; TINYTHINKER_DEBUG set to anything but "", 0, false or no also asks for it."""
    cut = argv.index("--") if "--" in argv else len(argv)
    flag = "--debug" in argv[:cut]
    rest = [a for a in argv[:cut] if a != "--debug"] + argv[cut:]
    env = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return flag or env, rest


def one_line(e: BaseException) -> str:
    """The error's message on one line; an OSError as 'PATH: reason' rather than '[Errno 13] ...'."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        text = f"{e.filename}: {e.strerror}" + (f" (and {e.filename2})" if e.filename2 is not None else "")
    else:
        text = str(e) or type(e).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(e).__name__


def _save_traceback() -> str | None:
    try:
        fd, path = tempfile.mkstemp(prefix="tinythinker-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(traceback.format_exc())
        return path
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug, argv = debug_requested(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        # Library errors are written to be read by a person: the message names what and where; no traceback.
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not the input: still one line, the traceback kept for the report
        if debug:
            traceback.print_exc()
            saved = None
        else:
            saved = _save_traceback()
        where = f"traceback saved to {saved}" if saved else "rerun with --debug for the traceback"
        print(f"error: unexpected {type(e).__name__}: {one_line(e)} (a bug in tinythinker, not your input; "
              f"{where})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
