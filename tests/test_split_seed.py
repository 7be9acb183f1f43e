"""The split seed kept apart from the training seed, and the guard against continuing a student on a run whose
validation questions it trained on (a second leg with another --seed once drew 168 of the first 200 CSQA
validation questions into training)."""

import json
from pathlib import Path

import pytest

from tinythinker import cli, runs
from tinythinker.data import load_questions
from tinythinker.phase1 import Phase1Config, check_unseen, load_phase1_data
from tinythinker.tiny import tiny_student


def fake_run(folder: Path, data_dir: Path, **config) -> Path:
    """A finished train run on CSQA: its config and a best/ student."""
    folder.mkdir(parents=True)
    (folder / runs.CONFIG).write_text(json.dumps({"command": "train", "data": "csqa", "data_dir": str(data_dir),
                                                  "student": "smollm2-135m", **config}))
    tiny_student("causal").save(folder / runs.BEST)
    return folder


def test_seed_no_longer_moves_the_split(data_dir):
    moved = Phase1Config(data_dir=str(data_dir), seed=1, limit=5, eval_limit=5)
    kept = Phase1Config(data_dir=str(data_dir), seed=0, limit=5, eval_limit=5)
    (train_a, val_a), (train_b, val_b) = load_phase1_data(moved), load_phase1_data(kept)
    assert [q.id for q in val_a] == [q.id for q in val_b] and [q.id for q, _ in train_a] == [q.id for q, _ in train_b]
    other = load_phase1_data(Phase1Config(data_dir=str(data_dir), split_seed=1, limit=5, eval_limit=5))[1]
    assert [q.id for q in other] != [q.id for q in val_a]
    # Configs whose two seeds agree are written as before (old runs still resume); others record the split seed.
    assert "split_seed" not in kept.resolved() and moved.resolved()["split_seed"] == 0
    assert runs.split_seed({"seed": 3}) == 3 and runs.split_seed({"seed": 3, "split_seed": 0}) == 0


def test_continuing_a_run_on_another_split_is_refused(tmp_path, data_dir):
    first = fake_run(tmp_path / "first", data_dir, seed=1)  # an old run: its split came from seed 1
    validation = load_questions("csqa", "validation", data_dir=data_dir, seed=0)
    seen = runs.trained_questions(first / runs.BEST)
    assert seen == {q.id for q in load_questions("csqa", "train", data_dir=data_dir, seed=1)}
    leaked = sum(q.id in seen for q in validation)
    assert 0 < leaked < len(validation)
    with pytest.raises(ValueError, match=rf"{leaked} of this run's {len(validation)} validation questions"):
        check_unseen(str(first / runs.BEST), validation, "train")
    # The lineage is followed: a run continued from `first` carries its training questions along.
    second = fake_run(tmp_path / "second", data_dir, seed=1, split_seed=1, limit=10, student=str(first / "best"))
    assert runs.trained_questions(second) == seen
    check_unseen(str(first / runs.BEST), load_questions("csqa", "validation", data_dir=data_dir, seed=1), "train")
    check_unseen("smollm2-135m", validation, "train")  # not a run: nothing to compare


def test_train_refuses_before_making_the_run_folder(tmp_path, data_dir, capsys):
    first = fake_run(tmp_path / "first", data_dir, seed=1)
    run = tmp_path / "next"
    argv = ["train", "--data", "csqa", "--data-dir", str(data_dir), "--student", str(first / "best"), "--run",
            str(run), "--limit", "4", "--eval-limit", "4", "--max-steps", "1", "--seed", "1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "validation questions" in err and "--split-seed" in err and not run.exists()


def test_evaluate_unseen_by_keeps_the_questions_no_run_trained_on(tmp_path, data_dir, capsys):
    first = fake_run(tmp_path / "first", data_dir, seed=1, limit=3000)
    seen = runs.trained_questions(first)
    questions = load_questions("csqa", "validation", data_dir=data_dir, limit=60)
    out = tmp_path / "traces.jsonl"
    argv = ["evaluate", "--student", str(first / "best"), "--data", "csqa", "--data-dir", str(data_dir), "--limit",
            "60", "--stage-type", "summarize", "--summarize-tokens", "4", "--out", str(out), "--json",
            "--unseen-by", str(first)]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    expected = [q.id for q in questions if q.id not in seen]
    assert 0 < len(expected) < 60 and result["questions"] == len(expected)
    assert [json.loads(line)["question"]["id"] for line in out.read_text().splitlines()] == expected
    assert cli.main([*argv[:-1], "smollm2-135m"]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_evaluate_split_seed_keeps_the_questions_while_the_sampling_seed_moves(tmp_path, data_dir, capsys):
    student = tmp_path / "student"
    tiny_student("causal").save(student)

    def evaluated(*flags: str) -> tuple[list[str], dict]:
        out = tmp_path / "traces.jsonl"
        argv = ["evaluate", "--student", str(student), "--data", "csqa", "--data-dir", str(data_dir), "--limit", "5",
                "--stage-type", "summarize", "--summarize-tokens", "4", "--out", str(out), "--json", *flags]
        assert cli.main(argv) == 0
        ids = [json.loads(line)["question"]["id"] for line in out.read_text().splitlines()]
        return ids, json.loads(capsys.readouterr().out)

    first, result = evaluated()
    assert result["split_seed"] == 0
    resampled, result = evaluated("--seed", "1", "--split-seed", "0")
    assert resampled == first and result["split_seed"] == 0 and result["sampling"]["seed"] == 1
    moved, result = evaluated("--seed", "1")  # as before --split-seed: --seed alone also draws the split
    assert moved != first and result["split_seed"] == 1
