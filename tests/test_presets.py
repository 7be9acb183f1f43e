"""`--preset paper` on train / reflect / teach sets exactly the paper's values (issue 13, item 5); flags given on the
command line win. The values are written out here, not read from the presets, so that a drift fails a test."""

import random
from dataclasses import asdict

import pytest

from tinythinker.cli import build_parser

PAPER_PHASE1 = {
    "lr": 5e-4, "batch_size": 64, "epochs": 10.0, "max_steps": None, "interval": 100, "lr_scheduler": "cosine",
    "warmup_ratio": 0.1, "warmup_steps": 0, "eval_max_new_tokens": 200, "answer_format": "letter",
    "restrict_answer": False, "order": "interval", "lora_r": 0, "cross_attention_lr_scale": 1.0,
    "group_by_length": False, "target_only_loss": True, "gradient_checkpointing": False,
}
PAPER_PHASE2 = {"iterations": 5, "samples": 10, "temperature": 0.7, "beta": 0.5, "alpha": 0.5, "lr": 5e-6,
                "batch_size": 32, "cycles": 10, "lora_r": 0}
PAPER_TEACHER = {"model": "gpt-4o-2024-05-13", "temperature": 0.8, "rounds": 3, "on_disagreement": "follow-teacher"}


def parse(command, *argv):
    return build_parser(command).parse_args([command, *argv])


def train_config(*argv):
    from tinythinker.commands.train import config_from_args

    return asdict(config_from_args(parse("train", "--run", "r", *argv)))


def reflect_config(*argv):
    from tinythinker.commands.reflect import config_from_args

    return asdict(config_from_args(parse("reflect", "--from", "p1", "--run", "r", *argv)))


def teach_config(*argv):
    from tinythinker.commands.teach import config_from_args

    return asdict(config_from_args(parse("teach", "--out", "o", *argv)).resolved())


def test_train_preset_paper_sets_every_value():
    from tinythinker.phase1 import Phase1Config

    got = train_config("--preset", "paper")
    assert {k: got[k] for k in PAPER_PHASE1} == PAPER_PHASE1
    # everything else stays as without the preset
    plain = asdict(Phase1Config(run="r"))
    assert {k: v for k, v in got.items() if k not in PAPER_PHASE1} == {
        k: v for k, v in plain.items() if k not in PAPER_PHASE1}


def test_train_flags_given_explicitly_win_over_the_preset():
    got = train_config("--preset", "paper", "--lr", "1e-4", "--batch-size", "16", "--interval", "20",
                       "--restrict-answer", "score", "--max-steps", "280", "--warmup-steps", "50")
    assert (got["lr"], got["batch_size"], got["interval"], got["restrict_answer"], got["max_steps"],
            got["warmup_steps"]) == (1e-4, 16, 20, "score", 280, 50)
    assert (got["epochs"], got["lr_scheduler"], got["answer_format"]) == (10.0, "cosine", "letter")
    # a flag given with the value it would have anyway still counts as given
    from tinythinker.phase1 import Phase1Config

    assert train_config("--preset", "paper", "--batch-size", str(Phase1Config().batch_size))["batch_size"] == 16


def test_train_without_preset_is_the_config_defaults_and_new_flags_are_wired():
    from tinythinker.phase1 import Phase1Config

    assert train_config() == asdict(Phase1Config(run="r"))
    got = train_config("--lr-scheduler", "linear", "--warmup-ratio", "0.05", "--lora-r", "8", "--lora-alpha", "32",
                       "--lora-dropout", "0.1", "--lora-targets", "q_proj,v_proj", "--eval-steps", "70",
                       "--full-width-loss")
    assert {k: got[k] for k in ("lr_scheduler", "warmup_ratio", "lora_r", "lora_alpha", "lora_dropout",
                                "lora_targets", "eval_steps", "target_only_loss")} == {
        "lr_scheduler": "linear", "warmup_ratio": 0.05, "lora_r": 8, "lora_alpha": 32, "lora_dropout": 0.1,
        "lora_targets": "q_proj,v_proj", "eval_steps": 70, "target_only_loss": False}
    assert train_config()["target_only_loss"] is True
    with pytest.raises(SystemExit):
        parse("train", "--run", "r", "--lr-scheduler", "wobbly")


def test_train_help_shows_plain_defaults(capsys):
    with pytest.raises(SystemExit):
        parse("train", "--help")
    out = capsys.readouterr().out
    assert "Unset" not in out and "(default: 0.0005)" in out and "--preset {paper}" in out


def test_reflect_preset_paper_sets_every_value_and_flags_win():
    from tinythinker.phase2 import ReflectConfig

    got = reflect_config("--preset", "paper")
    assert {k: got[k] for k in PAPER_PHASE2} == PAPER_PHASE2
    plain = asdict(ReflectConfig(from_run="p1", run="r"))
    assert {k: v for k, v in got.items() if k not in PAPER_PHASE2} == {
        k: v for k, v in plain.items() if k not in PAPER_PHASE2}
    assert reflect_config() == plain
    assert plain["iterations"] == 5  # the paper's run_dpo.sh, also the default (item 3)
    got = reflect_config("--preset", "paper", "--iterations", "2", "--lr", "2e-5", "--lora-r", "4")
    assert (got["iterations"], got["lr"], got["lora_r"], got["samples"]) == (2, 2e-5, 4, 10)
    got = reflect_config("--lora-r", "8", "--lora-alpha", "16", "--lora-dropout", "0.0", "--lora-targets", "q,v")
    assert (got["lora_r"], got["lora_alpha"], got["lora_dropout"], got["lora_targets"]) == (8, 16, 0.0, "q,v")


def test_reflect_sampling_is_the_papers(monkeypatch):
    """Recall sampled at the config's temperature (0.7) with top-k off, every other stage greedy; analyses for
    the analyze pairs sampled the same way on a kept recall."""
    import tinythinker.pipeline as pipeline
    from tinythinker import phase2
    from tinythinker.pairs import AnalyzeContext
    from tinythinker.phase2 import ReflectConfig
    from tinythinker.types import Option, Question

    seen = {}
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, sampling, **k: seen.setdefault("recall", sampling) and [])
    monkeypatch.setattr(pipeline, "complete_traces",
                        lambda *a, sampling, **k: seen.setdefault("analyze", sampling) and [])
    config = ReflectConfig(from_run="x")
    q = Question("q", "where?", [Option("A", "a"), Option("B", "b")], "A")
    phase2.sample_recalls(None, [q], config, "recall_analyze_summarize", False)
    phase2.sample_analyses(None, [AnalyzeContext(q, "r")], config, "recall_analyze_summarize", False)
    for sampled, sampling in (("recall", seen["recall"]), ("analyze", seen["analyze"])):
        for stage in ("recall", "analyze", "summarize"):
            sc = sampling.stage(stage)
            if stage == sampled:
                assert (sc.do_sample, sc.temperature, sc.top_k, sc.top_p) == (True, 0.7, 0, 1.0)
            else:
                assert not sc.do_sample


@pytest.mark.parametrize("data,samples,shots", [("csqa", 8, 8), ("obqa", 4, 7), ("strategyqa", 4, 8)])
def test_teach_preset_paper_sets_every_value(data, samples, shots):
    got = teach_config("--preset", "paper", "--data", data)
    assert {k: got[k] for k in PAPER_TEACHER} == PAPER_TEACHER
    assert (got["benchmark"], got["samples"], got["keep"], got["shots"]) == (data, samples, samples, shots)
    got = teach_config("--preset", "paper", "--data", data, "--samples", "2", "--temperature", "1.0")
    assert (got["samples"], got["keep"], got["temperature"], got["shots"]) == (2, 2, 1.0, shots)


def test_teacher_diversity_rule_is_levenshtein_over_10():
    from tinythinker.teacher.select import DIVERSITY_THRESHOLD, select_diverse

    assert DIVERSITY_THRESHOLD == 10
    base = "a" * 20
    ten, eleven = base[:10] + "b" * 10, base[:9] + "b" * 11  # 10 and 11 edits from base
    # 11 edits apart: both distinct, both kept first; 10 edits apart: neither counts as distinct
    assert select_diverse(["x", "y", "z"], [base, eleven, base], keep=1, rng=random.Random(0)) == ["y"]
    assert select_diverse(["x", "y"], [base, ten], keep=2, rng=random.Random(0)) in (["x", "y"], ["y", "x"])
    got = select_diverse(["x", "y", "z"], [base, ten, "c" * 30], keep=1, rng=random.Random(0))
    assert got == ["z"]
