"""`--preset NAME`: a named set of flag values for a command, under which flags given on the command line win.

A command registers its flags as usual, then `add_preset(parser, PRESETS)`. That wraps the default of every flag a
preset names in `Unset` (still shown as the plain default by `--help`), so that after parsing a value that is an
`Unset` is one the user did not give. `resolve(args, PRESETS)` then fills it from the chosen preset, or with the
plain default when there is no preset or the preset does not name that flag. Commands call `resolve` at the top of
their `config_from_args`, so any code path from parsed arguments to a config goes through it (it is idempotent).

Preset keys are argparse `dest` names (`batch_size` for `--batch-size`).
"""

from __future__ import annotations

import argparse
from typing import Any

PAPER = "paper"


class Unset:
    """The default of a flag the user did not give; `--help` shows the value it stands for."""

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)

    def __str__(self) -> str:
        return str(self.value)


def add_preset(parser: argparse.ArgumentParser, presets: dict[str, dict[str, Any]], help_text: str) -> None:
    dests = {a.dest: a for a in parser._actions}
    unknown = sorted({k for p in presets.values() for k in p} - set(dests))
    if unknown:
        raise ValueError(f"preset names flags the parser lacks: {', '.join(unknown)}")
    for name in {k for p in presets.values() for k in p}:
        action = dests[name]
        if not isinstance(action.default, Unset):
            action.default = Unset(action.default)
    parser.add_argument("--preset", choices=sorted(presets), default=None, help=help_text)


def resolve(args: argparse.Namespace, presets: dict[str, dict[str, Any]]) -> argparse.Namespace:
    """Replace every `Unset` in `args` by the preset's value (when `--preset` names one) or the plain default."""
    chosen = presets[args.preset] if getattr(args, "preset", None) else {}
    for key, value in vars(args).items():
        if isinstance(value, Unset):
            setattr(args, key, chosen.get(key, value.value))
    return args

