"""Every `python -m tinythinker ...` command in README.md parses with the real argument parser (issue 13, item 14).

Nothing runs: each command's arguments go through `build_parser(command).parse_args`, so a renamed or removed flag,
a missing required one or a placeholder like `...` in the README fails here."""

import re
import shlex
from pathlib import Path

import pytest

from tinythinker.cli import COMMANDS, build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
LAUNCH = re.compile(r"(?:^|\s)-m tinythinker(?:\s|$)")


def readme_commands() -> list[str]:
    """Shell lines of the README's code blocks that run tinythinker, continuation lines joined."""
    out = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", README.read_text(), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if LAUNCH.search(line):
                out.append(line.strip())
    return out


def arguments(line: str) -> list[str]:
    tokens = shlex.split(line, comments=True)
    for sep in ("&&", "||", ";", "|"):
        if sep in tokens:
            tokens = tokens[:tokens.index(sep)]
    at = next(i for i in range(len(tokens) - 1) if tokens[i] == "-m" and tokens[i + 1] == "tinythinker")
    rest = tokens[at + 2:]
    return rest[1:] if rest[:1] == ["--"] else rest  # torchrun's separator


def test_the_readme_has_commands_of_every_kind():
    used = {arguments(line)[0] for line in readme_commands()}
    assert {"data", "show", "evaluate", "train", "reflect", "store", "teach"} <= used
    assert len(readme_commands()) >= 15


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_parses(line, capsys):
    argv = arguments(line)
    assert argv and argv[0] in COMMANDS, line
    assert "..." not in argv, f"a placeholder in a README command: {line}"
    try:
        args = build_parser(argv[0]).parse_args(argv)
    except SystemExit:
        pytest.fail(f"README command does not parse: {line}\n{capsys.readouterr().err}")
    assert callable(args.func)
    if argv[0] in ("train", "reflect", "teach"):
        # the command's own config is built from them as `run` builds it (presets resolved, checks passed)
        import importlib

        module = importlib.import_module(f"tinythinker.commands.{COMMANDS[argv[0]][0]}")
        config = module.config_from_args(args)
        if hasattr(config, "check"):
            config.check()
