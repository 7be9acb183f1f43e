"""Run folders: config guard, metrics records, resume truncation, listing for the app."""

import json

import pytest

from tinythinker import runs


def test_prepare_run_creates_then_accepts_same_config_and_rejects_another(tmp_path):
    run = tmp_path / "r1"
    cfg = {"command": "train", "lr": 0.001, "stage_type": "summarize", "tuple": (1, 2)}
    assert runs.prepare_run(run, cfg) is False
    assert runs.read_config(run)["tuple"] == [1, 2]
    assert runs.prepare_run(run, cfg) is True
    with pytest.raises(runs.RunError, match=r"holds another config \(lr: 0.001 -> 0.002\)"):
        runs.prepare_run(run, {**cfg, "lr": 0.002})


def test_prepare_run_refuses_a_non_run_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(runs.RunError, match="not empty and has no config.json"):
        runs.prepare_run(tmp_path / "x", {"command": "train"})


def test_metrics_append_read_truncate(tmp_path):
    runs.prepare_run(tmp_path, {"command": "train"})
    runs.append_metrics(tmp_path, {"kind": "train", "step": 1, "loss": 2.0, "stage": "recall"},
                        {"kind": "eval", "step": 2, "accuracy": 0.5})
    runs.append_metrics(tmp_path, {"kind": "train", "step": 3, "loss": 1.0, "stage": "summarize"},
                        {"kind": "end", "step": 3})
    assert [r["step"] for r in runs.read_metrics(tmp_path, "train")] == [1, 3]
    assert runs.truncate_metrics(tmp_path, 2) == 2
    assert [(r["kind"], r["step"]) for r in runs.read_metrics(tmp_path)] == [("train", 1), ("eval", 2)]
    with pytest.raises(ValueError, match="without 'kind'"):
        runs.append_metrics(tmp_path, {"step": 4})


def test_torn_last_line_is_skipped_but_a_broken_middle_line_is_an_error(tmp_path):
    (tmp_path / runs.METRICS).write_text('{"kind": "train", "step": 1}\n{"kind": "tr')
    assert len(runs.read_metrics(tmp_path)) == 1
    (tmp_path / runs.METRICS).write_text('{"kind": "tr\n{"kind": "train", "step": 1}\n')
    with pytest.raises(runs.RunError, match=r"metrics.jsonl:1: not valid JSON"):
        runs.read_metrics(tmp_path)


def test_last_checkpoint_needs_trainer_state(tmp_path):
    for step, complete in ((5, True), (10, True), (15, False)):
        d = tmp_path / runs.CHECKPOINTS / f"checkpoint-{step}"
        d.mkdir(parents=True)
        if complete:
            (d / "trainer_state.json").write_text("{}")
    assert runs.last_checkpoint(tmp_path).name == "checkpoint-10"
    assert runs.last_checkpoint(tmp_path / "missing") is None


def test_list_runs_summarizes_and_skips_model_configs(tmp_path):
    a = tmp_path / "a"
    runs.prepare_run(a, {"command": "train", "student": "s", "data": "csqa", "stage_type": "summarize"})
    runs.append_metrics(a, {"kind": "train", "step": 4, "loss": 1.0, "stage": "summarize"},
                        {"kind": "eval", "step": 4, "accuracy": 0.3}, {"kind": "eval", "step": 8, "accuracy": 0.2},
                        {"kind": "end", "step": 8})
    (a / runs.BEST).mkdir()
    (a / runs.BEST / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (a / runs.CHECKPOINTS / "checkpoint-8").mkdir(parents=True)
    (a / runs.CHECKPOINTS / "checkpoint-8" / "config.json").write_text("{}")
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    listed = runs.list_runs(tmp_path)
    assert [r.name for r in listed] == ["a"]
    r = listed[0]
    assert (r.step, r.best_accuracy, r.last_accuracy, r.has_best, r.finished) == (8, 0.3, 0.2, True, True)
    assert r.to_dict()["stage_type"] == "summarize"
    assert runs.list_runs(tmp_path / "nowhere") == []
    with pytest.raises(runs.RunError, match="no config.json"):
        runs.read_config(tmp_path / "nowhere")


def test_student_folders_lists_full_and_lora_students_but_not_trainer_checkpoints(tmp_path):
    from tinythinker.workspace import student_folders

    def folder(rel, *files):
        d = tmp_path / rel
        d.mkdir(parents=True)
        for f in files:
            (d / f).write_text("{}")
        return d

    full = folder("full/best", "config.json", "model.safetensors")
    lora = folder("lora/best", "adapter_config.json", "adapter_model.safetensors")
    folder("lora/checkpoints/checkpoint-3", "adapter_config.json", "adapter_model.safetensors")
    folder("broken/best", "adapter_config.json")  # no adapter weights: not loadable
    assert set(student_folders(tmp_path)) == {full, lora}
