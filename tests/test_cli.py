import subprocess
import sys

from tinythinker.cli import COMMANDS, build_parser, main


def test_every_command_registers_its_parser():
    for name in COMMANDS:
        parser = build_parser(name)
        # `--help` of the command itself must be reachable: the subparser exists under its name.
        assert name in parser._subparsers._group_actions[0].choices


def test_top_level_help_does_not_import_torch():
    code = "import sys; from tinythinker.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_library_errors_print_a_message_not_a_traceback(capsys, tmp_path):
    rc = main(["data", "--data", "csqa", "--split", "test", "--data-dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def _boom(args):
    raise TypeError("an internal mistake")


def _user_error(args):
    raise PermissionError(13, "Permission denied", "/some/where.db")


def test_user_errors_are_one_line_with_exit_2_and_debug_shows_the_traceback(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("TINYTHINKER_DEBUG", raising=False)
    monkeypatch.setattr("tinythinker.commands.data.run_data", _user_error)
    assert main(["data"]) == 2
    err = capsys.readouterr().err
    assert err == "error: /some/where.db: Permission denied\n"  # an OSError as 'PATH: reason', not '[Errno 13]'
    for argv in (["--debug", "data"], ["data", "--debug"]):  # anywhere on the line
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):") and "PermissionError" in err
        assert err.endswith("error: /some/where.db: Permission denied\n")
    monkeypatch.setenv("TINYTHINKER_DEBUG", "1")
    assert main(["data"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("TINYTHINKER_DEBUG", "0")
    assert main(["data"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_bug_is_one_line_too_with_its_traceback_saved(capsys, monkeypatch):
    monkeypatch.delenv("TINYTHINKER_DEBUG", raising=False)
    monkeypatch.setattr("tinythinker.commands.data.run_data", _boom)
    assert main(["data"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: unexpected TypeError: an internal mistake (a bug in tinythinker, not your input; "
                          "traceback saved to ")
    saved = err.rsplit("traceback saved to ", 1)[1].rstrip(")\n")
    try:
        assert "TypeError: an internal mistake" in open(saved).read()
    finally:
        import os

        os.unlink(saved)
    assert main(["--debug", "data"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_multi_line_messages_become_one_line(capsys, monkeypatch):
    def two_lines(args):
        raise ValueError("first\nsecond\r\nthird")

    monkeypatch.setattr("tinythinker.commands.data.run_data", two_lines)
    assert main(["data"]) == 2
    assert capsys.readouterr().err == "error: first second third\n"


def test_debug_flag_is_in_the_help(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--debug" in capsys.readouterr().out
