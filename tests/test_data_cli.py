"""`python -m tinythinker data` and `show`. Most tests build a parser with only these two commands (the full
CLI imports every area, torch included); one goes through `tinythinker.cli.main` end to end."""

import argparse
import json

import pytest

from tinythinker.commands import data as data_command
from tinythinker.data import load_questions, split_fingerprint


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tinythinker")
    data_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_data_prints_size_fingerprint_and_coverage(data_dir, capsys):
    assert run(["data", "--data", "strategyqa", "--split", "validation", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    fp = split_fingerprint(load_questions("strategyqa", "validation", data_dir=data_dir))
    assert "questions:   206" in out and f"fingerprint: {fp}" in out
    assert "facts: 206 for 206 questions" in out and "questions with a recall 100.0%" in out


def test_data_json_and_seed(data_dir, capsys):
    args = ["data", "--data", "csqa", "--data-dir", str(data_dir), "--json", "--no-rationales"]
    assert run(args + ["--seed", "0"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert run(args + ["--seed", "5"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert a["questions"] == b["questions"] == 1221 and a["fingerprint"] != b["fingerprint"]
    assert "coverage" not in a


def test_data_user_jsonl(tmp_path, capsys):
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"id": "m1", "question": "Q?", "options": ["a", "b"], "answer": "A", "recall": "R."}))
    assert run(["data", "--data", "jsonl", "--path", str(f), "--split", "test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["questions"] == 1 and report["coverage"]["questions_with_recall"] == 1.0


def test_show_renders_three_stage_formats(data_dir, capsys):
    assert run(["show", "--data", "csqa", "--index", "0", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "id 075e483d21c29a511267ef62bedc0461" in out and "(A) ignore   <- answer" in out
    assert out.count("[Analyze option") == 5
    assert "| The sanctions against the school" in out and "| Recall:" in out
    assert "| Analyze: For option C," in out and "| Summarize:" in out
    assert "| So the answer is option A." in out


def test_show_recall_only_source_and_by_id(data_dir, capsys):
    assert run(["show", "--data", "obqa", "--split", "validation", "--id", "8-376",
                "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "[Recall]" in out and "[Analyze" not in out and "deep sea animals live deep in the ocean" in out
    with pytest.raises(ValueError, match="out of range"):
        run(["show", "--data", "obqa", "--split", "validation", "--index", "500", "--data-dir", str(data_dir)])


@pytest.mark.parametrize("command", ["data", "show"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        run([command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--data-dir" in text and "TINYTHINKER_DATA_DIR" in text and "./data" in text and "hub" in text


def test_through_the_real_cli(data_dir, capsys):
    from tinythinker.cli import main

    assert main(["data", "--data", "obqa", "--split", "test", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "obqa/test_complete.jsonl" in err and "Traceback" not in err
    assert main(["data", "--data", "obqa", "--data-dir", str(data_dir), "--no-rationales"]) == 0
    assert "questions:   500" in capsys.readouterr().out
