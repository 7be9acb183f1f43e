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
