"""Phase 1 end to end with tiny students: run folder, schedule stages in the record, best/, resume, errors."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tinythinker import runs, stages
from tinythinker.phase1 import (
    Phase1Config,
    build_stage_data,
    encode_stage_data,
    scaled_optimizer,
    train_phase1,
)
from tinythinker.schedule import interval_order
from tinythinker.students import make_trainable
from tinythinker.tiny import tiny_student
from tinythinker.types import Option, Question, Rationale

ROOT = Path(__file__).resolve().parent.parent


def make_examples(n=6, stem_words=4):
    out = []
    for i in range(n):
        answer = "ABC"[i % 3]
        q = Question(f"t{i}", " ".join(["where"] * stem_words) + f" is item {i}?",
                     [Option("A", "home"), Option("B", "park"), Option("C", "shop")], answer, "test")
        r = Rationale(f"Item {i} is often in the {q.option_text(answer)}.",
                      {lab: f"{q.option_text(lab)} is {'right' if lab == answer else 'wrong'}." for lab in q.labels})
        out.append((q, [r]))
    return out


def config(tmp_path, **kw):
    base = dict(run=str(tmp_path / "run"), student="tiny", interval=1, batch_size=2, eval_batch_size=4,
                max_steps=7, lr=1e-3, max_source_length=256, max_target_length=32, logging_steps=1,
                eval_max_new_tokens=6)
    base.update(kw)
    return Phase1Config(**base)


@pytest.mark.parametrize("kind,stage_type,order", [
    pytest.param("seq2seq", "recall_analyze_summarize", "interval", marks=pytest.mark.slow),
    ("causal", "summarize", "interval"),
    ("bert2bert", "analyze_summarize", "interval"),
    pytest.param("causal", "recall_summarize", "mixed", marks=pytest.mark.slow)])
def test_train_writes_run_folder_with_stage_losses_evals_and_best(tmp_path, kind, stage_type, order):
    examples = make_examples()
    questions = [q for q, _ in examples[:3]]
    # bert2bert also exercises the cross-attention learning-rate knob (its cross-attention is new).
    cfg = config(tmp_path, stage_type=stage_type, order=order,
                 cross_attention_lr_scale=10.0 if kind == "bert2bert" else 1.0)
    progress = []
    result = train_phase1(cfg, progress.append, student=tiny_student(kind), examples=examples, questions=questions)
    run = Path(cfg.run)
    assert runs.read_config(run) == json.loads(json.dumps(cfg.resolved()))
    assert result.global_step == 7
    train = runs.read_metrics(run, "train")
    assert [r["step"] for r in train] == list(range(1, 8))
    data = build_stage_data(examples, stage_type)
    sizes = {s: -(-n // 2) for s, n in data.sizes().items()}  # batches of 2
    schedule = interval_order(sizes, stages.stages_of(stage_type), 1, 3) if order == "interval" else ["mixed"]
    assert [r["stage"] for r in train] == [schedule[(r["step"] - 1) % len(schedule)] for r in train]
    assert all(r["loss"] > 0 for r in train)
    evals = runs.read_metrics(run, "eval")
    cycle = {"recall_analyze_summarize": 5, "summarize": 1, "analyze_summarize": 4, "recall_summarize": 2}[stage_type]
    expected = sorted({*range(cycle, 8, cycle), 7})
    assert [r["step"] for r in evals] == expected
    assert all(r["questions"] == 3 and 0 <= r["accuracy"] <= 1 for r in evals)
    assert result.best_accuracy == max(r["accuracy"] for r in evals)
    best = json.loads((run / "best" / "phase1_best.json").read_text())
    assert best["accuracy"] == result.best_accuracy
    from tinythinker.students import load_student

    reloaded = load_student(run / "best")
    assert reloaded.kind == tiny_student(kind).kind
    assert load_student(runs.last_checkpoint(run)).kind == reloaded.kind  # --student accepts a checkpoint
    # ... and a run folder (its config.json is the run's) means its best/, for train, evaluate and the app alike
    assert load_student(run).name == reloaded.name == run.name
    assert (run / "train.log").read_text().count("stage examples") == 1
    assert runs.last_checkpoint(run).name == "checkpoint-7"
    assert runs.read_metrics(run, "end")[0]["step"] == 7
    assert any(p["kind"] == "step" for p in progress) and any(p["kind"] == "eval" for p in progress)


def test_answer_target_survives_truncation_and_padding_end_to_end():
    student = tiny_student("seq2seq")
    examples = make_examples(n=4, stem_words=200)  # inputs far over the source budget
    data = build_stage_data(examples, "recall_analyze_summarize")
    dataset = encode_stage_data(student, data, max_source_length=48, max_target_length=32)
    pairs = [p for s in data.examples for p in data.examples[s]]
    batch = student.collator()([dataset[i] for i in range(len(dataset))])
    assert batch["input_ids"].shape[1] == 48  # truncated to the budget and padded to one width
    for (_inp, target), labels in zip(pairs, batch["labels"].tolist(), strict=True):
        ids = [t for t in labels if t != -100]
        assert student.decode(ids) == target  # the whole target, answer included
    summaries = [student.decode([t for t in row if t != -100])
                 for row, (inp, _) in zip(batch["labels"].tolist(), pairs, strict=True) if inp.endswith("Summarize:")]
    assert [stages.parse_answer(s) for s in summaries] == [q.answer for q, _ in examples]
    causal = tiny_student("causal")
    feats = encode_stage_data(causal, data, max_source_length=48, max_target_length=32)
    cb = causal.collator()([feats[i] for i in range(len(feats))])
    for (_, target), labels in zip(pairs, cb["labels"].tolist(), strict=True):
        assert causal.decode([t for t in labels if t != -100]) == target


def test_cross_attention_lr_scale_groups_and_clear_error(tmp_path):
    cfg = config(tmp_path, cross_attention_lr_scale=10.0, weight_decay=0.1)
    opt = scaled_optimizer(tiny_student("bert2bert").model, cfg)
    lrs = {(g["lr"], g["weight_decay"]) for g in opt.param_groups}
    assert lrs == {(1e-2, 0.1), (1e-2, 0.0), (1e-3, 0.1), (1e-3, 0.0)}
    assert scaled_optimizer(tiny_student("bert2bert").model, config(tmp_path)) is None
    with pytest.raises(ValueError, match="no 'crossattention' weights"):
        scaled_optimizer(tiny_student("causal").model, cfg)


def test_run_folder_with_another_config_fails_before_training(tmp_path):
    examples = make_examples()
    questions = [q for q, _ in examples[:2]]
    runs.prepare_run(tmp_path / "run", config(tmp_path, lr=0.5).resolved())
    with pytest.raises(runs.RunError, match=r"holds another config \(lr: 0.5 -> 0.001\)"):
        train_phase1(config(tmp_path), student=tiny_student(), examples=examples, questions=questions)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_source_without_analyses_fails_before_the_run_folder_is_made(tmp_path):
    examples = [(q, [Rationale(r.recall, {})]) for q, rs in make_examples() for r in rs]
    with pytest.raises(ValueError, match="no per-option analyses"):
        train_phase1(config(tmp_path), student=tiny_student(), examples=examples, questions=[examples[0][0]])
    assert not (tmp_path / "run").exists()


KILL_SCRIPT = """
import os, signal, sys
from tinythinker.commands.train import config_from_args
from tinythinker.cli import build_parser
from tinythinker.phase1 import train_phase1
args = build_parser("train").parse_args(sys.argv[1:])
def progress(p):
    if p["kind"] == "step" and p["step"] == 9:  # step 8 logged after the checkpoint at 7 (one cycle), then die
        os.kill(os.getpid(), signal.SIGKILL)
train_phase1(config_from_args(args), progress)
"""


@pytest.mark.slow
def test_sigkill_then_same_command_resumes(tmp_path, data_dir):
    tiny_student("seq2seq").save(tmp_path / "student")
    argv = ["train", "--data", "csqa", "--data-dir", str(data_dir), "--student", str(tmp_path / "student"),
            "--stage-type", "recall_analyze_summarize", "--interval", "1", "--limit", "6", "--eval-limit", "3",
            "--batch-size", "2", "--max-steps", "10", "--run", str(tmp_path / "run"), "--logging-steps", "1",
            "--max-target-length", "256", "--eval-max-new-tokens", "6"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, *argv], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = tmp_path / "run"
    assert runs.last_checkpoint(run).name == "checkpoint-7"  # cycle: 1 recall + 5 analyze + 1 summarize steps
    assert max(r["step"] for r in runs.read_metrics(run)) >= 8  # logged past the checkpoint, then died
    assert not runs.read_metrics(run, "end")
    again = subprocess.run([sys.executable, "-m", "tinythinker", *argv], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    result = json.loads(again.stdout[again.stdout.rindex("\n{") + 1:])  # the summary printed last
    assert result["resumed_from"].endswith("checkpoint-7") and result["global_step"] == 10
    train_steps = [r["step"] for r in runs.read_metrics(run, "train")]
    assert train_steps == list(range(1, 11))  # continued at 8, nothing logged twice
    assert [r["step"] for r in runs.read_metrics(run, "eval")] == [7, 10]
    assert "resuming from" in (run / "train.log").read_text()
    changed = [("2" if a == "1" and argv[i - 1] == "--logging-steps" else a) for i, a in enumerate(argv)]
    bad = subprocess.run([sys.executable, "-m", "tinythinker", *changed], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "holds another config (logging_steps: 1 -> 2)" in bad.stderr


@pytest.mark.slow
def test_two_process_torchrun_gloo(tmp_path, data_dir):
    tiny_student("seq2seq").save(tmp_path / "student")
    torchrun = Path(sys.executable).parent / "torchrun"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(port), "-m", "tinythinker", "--", "train",
           "--data", "csqa", "--data-dir", str(data_dir), "--student", str(tmp_path / "student"),
           "--stage-type", "recall_analyze_summarize", "--interval", "1", "--limit", "8", "--eval-limit", "4",
           "--batch-size", "2", "--max-steps", "8", "--run", str(tmp_path / "run"), "--logging-steps", "1",
           "--max-target-length", "256", "--eval-max-new-tokens", "6"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    assert [r["step"] for r in runs.read_metrics(run, "train")] == list(range(1, 9))  # rank 0 writes, once
    evals = runs.read_metrics(run, "eval")
    assert [r["step"] for r in evals] == [7, 8] and all(r["questions"] == 4 for r in evals)
    assert (run / "best" / "phase1_best.json").is_file()


def test_gguf_dequantized_model_is_made_trainable():
    # smollm2-135m comes from a GGUF file: transformers dequantizes it to fp32 but keeps a "quantized" mark that
    # makes the Trainer refuse it. Same mark on a tiny model, without loading the real one.
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.trainer_utils import validate_quantization_for_training
    from transformers.utils.quantization_config import GgufConfig

    model = tiny_student("causal").model
    model.hf_quantizer = GgufHfQuantizer(GgufConfig())
    model.is_quantized = True
    with pytest.raises(ValueError, match="purely quantized"):
        validate_quantization_for_training(model)
    make_trainable(model)
    validate_quantization_for_training(model)
    assert not model.is_quantized


def test_train_cli_on_the_users_own_jsonl_with_score_answers(tmp_path, capsys):
    from tinythinker import cli

    rows = [{"id": f"u{i}", "question": f"Which colour is thing {i}?", "options": ["red", "blue", "green"],
             "answer": "ABC"[i % 3], "recall": f"Thing {i} has a colour.",
             "analyses": [f"red fits {i}", f"blue fits {i}", f"green fits {i}"]} for i in range(12)]
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tiny_student("seq2seq").save(tmp_path / "student")
    argv = ["train", "--data", "jsonl", "--path", str(data), "--student", str(tmp_path / "student"),
            "--stage-type", "recall_analyze_summarize", "--interval", "1", "--batch-size", "2", "--max-steps", "5",
            "--run", str(tmp_path / "run"), "--eval-max-new-tokens", "4", "--answer-format", "text_letter",
            "--restrict-answer", "score"]
    assert cli.main(argv) == 0
    config = runs.read_config(tmp_path / "run")
    assert config["path"] == str(data) and config["restrict_answer"] == "score"
    assert config["answer_format"] == "text_letter"
    evals = runs.read_metrics(tmp_path / "run", "eval")
    # 12 questions: 10% (at least one) held out for validation, every answer one of the options.
    assert evals and evals[-1]["questions"] >= 1 and evals[-1]["invalid_rate"] == 0
    capsys.readouterr()
    assert cli.main([*argv[:3], "--run", str(tmp_path / "other")]) == 2
    assert "needs a path" in capsys.readouterr().err


def test_own_context_continues_summarize_alone(tmp_path):
    """The context-shift option end to end: only Summarize steps, its examples include the own-context trace."""
    from tinythinker.pipeline import write_traces
    from tinythinker.types import Trace

    examples = make_examples()
    questions = [q for q, _ in examples[:2]]
    train_q = examples[4][0]
    own = tmp_path / "own.jsonl"
    write_traces(own, [Trace(train_q, "my own recall.", {lab: "my own view." for lab in train_q.labels},
                             "So the answer is option A.", "A", False)])
    cfg = config(tmp_path, stage_type="recall_analyze_summarize", train_stages="summarize", own_context=str(own),
                 max_steps=3)
    train_phase1(cfg, student=tiny_student("causal"), examples=examples[2:], questions=questions)
    train = runs.read_metrics(Path(cfg.run), "train")
    assert {r["stage"] for r in train} == {"summarize"}
    assert "'summarize': 5" in (Path(cfg.run) / "train.log").read_text()  # 4 teacher examples + 1 own
    leaky = tmp_path / "leak.jsonl"
    write_traces(leaky, [Trace(questions[0], "r", {}, "", None, None)])
    with pytest.raises(ValueError, match="leak.jsonl, trace 1: question 't0' is a validation question"):
        train_phase1(config(tmp_path / "b", stage_type="recall_analyze_summarize", own_context=str(leaky)),
                     student=tiny_student("causal"), examples=examples[2:], questions=questions)


def test_micro_batches_train_the_same_steps_as_one_piece(tmp_path):
    """An optimizer step of 4 examples as 2 forward passes of 2 (the CPU default's memory saving) is the step of
    one pass of 4: same stage record, same weights to float tolerance."""
    import torch

    examples = make_examples(8)
    questions = [q for q, _ in examples[:2]]
    trained, records = {}, {}
    for pieces in (1, 2):
        torch.manual_seed(0)
        student = tiny_student("causal")
        cfg = config(tmp_path / f"m{pieces}", stage_type="recall_summarize", batch_size=4, micro_batches=pieces,
                     max_steps=3, eval_steps=100, group_by_length=False)
        result = train_phase1(cfg, student=student, examples=examples, questions=questions)
        assert result.global_step == 3
        trained[pieces] = {k: v.detach().clone() for k, v in student.model.state_dict().items()}
        records[pieces] = [(r["step"], r["stage"]) for r in runs.read_metrics(cfg.run, "train")]
    assert records[1] == records[2] == [(1, "recall"), (2, "summarize"), (3, "recall")]
    torch.manual_seed(0)
    untrained = tiny_student("causal").model.state_dict()
    assert any(not torch.equal(untrained[k], v) for k, v in trained[1].items())  # the steps did train
    from tinythinker.phase1 import training_args

    args = training_args(config(tmp_path / "a", batch_size=4, micro_batches=2), tmp_path / "a", 1, True)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 2)
    args = training_args(config(tmp_path / "b", batch_size=16, grad_accum=2), tmp_path / "b", 1, True)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 8)  # CPU default
    for name, weight in trained[1].items():
        torch.testing.assert_close(trained[2][name], weight, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ValueError, match="micro_batches must be at least 1 and divide batch_size 4, got 3"):
        config(tmp_path / "bad", batch_size=4, micro_batches=3).check()
