import json
import sqlite3

import pytest

from tinythinker import phase2, runs, stages
from tinythinker.cli import main
from tinythinker.pairs import Pair
from tinythinker.phase2 import ReflectConfig, ReflectError, read_phase1, reflect, schedule
from tinythinker.types import Option, Question, Rationale, Trace

WORDS = "water tree fire house river road food music garden window".split()


def question(i):
    return Question(f"q{i}", f"where is the {WORDS[i % len(WORDS)]} {i}?",
                    [Option("A", "house"), Option("B", "river"), Option("C", "garden")], "A", "test")


def phase1_run(tmp_path, stage_type="recall_analyze_summarize", kind="seq2seq"):
    from tinythinker.tiny import tiny_student

    run = tmp_path / "p1"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"command": "train", "data": "csqa", "stage_type": stage_type,
                                                 "student": "tiny", "seed": 0, "max_source_length": 128,
                                                 "max_target_length": 48}))
    tiny_student(kind, seed=0).save(run / "best")
    return run


def fake_recall_sampler(all_right=False):
    """Sampled traces with known outcomes: per question, even samples right, odd ones wrong."""
    def sample(student, questions, config, stage_type, restrict, on_progress=None, seed=0):
        out = []
        for q in questions:
            for s in range(config.samples):
                right = all_right or s % 2 == 0
                pred = "A" if right else "B"
                out.append(Trace(q, f"the {WORDS[s]} is {'good' if right else 'bad'} {s}",
                                 {"A": f"a {s}", "B": f"b {s}", "C": f"c {s}"},
                                 f"So the answer is option {pred}.", pred, right,
                                 sampling={"sample_index": s}, stage_type=stage_type))
        return out
    return sample


def fake_analyze_sampler(student, contexts, config, stage_type, restrict, on_progress=None, seed=0):
    out = []
    for c in contexts:
        for s in range(config.samples):
            right = s % 2 == 0
            pred = "A" if right else "C"
            tag = "right" if right else "wrong"
            out.append(Trace(c.question, c.recall, {lab: f"{lab} is {tag} {s}" for lab in "ABC"},
                             f"So the answer is option {pred}.", pred, right, sampling={"sample_index": s},
                             stage_type=stage_type))
    return out


class FakeEval:
    """Validation stand-in (the staged pipeline itself is tested in test_pipeline / test_phase1): counts the
    evaluations and scores the student by how much its weights moved, so later checkpoints score higher."""

    def __init__(self):
        self.calls = 0

    def __call__(self, questions, stage_type, batch_size, restrict):
        def evaluate(student):
            self.calls += 1
            return {"accuracy": min(1.0, 0.1 * self.calls), "invalid_rate": 0.0, "n": len(questions)}
        return evaluate


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setattr(phase2, "sample_recalls", fake_recall_sampler())
    monkeypatch.setattr(phase2, "sample_analyses", fake_analyze_sampler)
    fake = FakeEval()
    monkeypatch.setattr(phase2, "evaluator", fake)
    return fake


def make_config(tmp_path, p1, **kw):
    base = dict(from_run=str(p1), run=str(tmp_path / "p2"), iterations=2, samples=4, limit=3, eval_limit=3,
                batch_size=8, cycles=1, lr=1e-3, db=str(tmp_path / "store.db"), sample_batch_size=8,
                eval_batch_size=8)
    base.update(kw)
    return ReflectConfig(**base)


def data(n=3):
    qs = [question(i) for i in range(n)]
    teacher = {q.id: [Rationale(f"teacher recall for {q.id}", {"A": "ta", "B": "tb", "C": "tc"})] for q in qs}
    return qs, teacher, [question(i) for i in range(10, 13)]


def test_schedule_follows_the_papers_intervals():
    recall = [Pair(f"p{i}", "c", "r", stages.RECALL, "q") for i in range(40)]
    analyze = [Pair(f"a{i}", "c", "r", stages.ANALYZE, "q") for i in range(100)]
    pairs = recall + analyze
    order, cycle = schedule(pairs, batch_size=8, cycles=2, seed=0)
    order = [pairs[i] for i in order]
    # recall_interval = 40 // 8 + 1 = 6; analyze_interval = (100 // 40 + 1) * 6 = 18
    assert cycle == 24
    assert len(order) == 2 * 24 * 8
    stages_in_order = [p.stage for p in order]
    assert stages_in_order[:48] == [stages.RECALL] * 48
    assert stages_in_order[48:192] == [stages.ANALYZE] * 144
    assert stages_in_order[192:240] == [stages.RECALL] * 48
    # every recall pair is used before any is used twice
    assert len({p.prompt for p in order[:40]}) == 40
    only_analyze, cycle = schedule(analyze, batch_size=8, cycles=1, seed=0)
    assert cycle == 13 and len(only_analyze) == 13 * 8


def test_from_must_be_a_phase1_run(tmp_path):
    with pytest.raises(ReflectError, match="no such folder"):
        read_phase1(tmp_path / "missing", "recall_analyze")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReflectError, match="not a phase-1 run"):
        read_phase1(tmp_path / "empty", "recall_analyze")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"command": "reflect"}))
    with pytest.raises(ReflectError, match="'reflect' run"):
        read_phase1(other, "recall_analyze")
    nobest = tmp_path / "nobest"
    nobest.mkdir()
    (nobest / "config.json").write_text(json.dumps({"command": "train", "stage_type": "summarize"}))
    with pytest.raises(ReflectError, match="no best checkpoint"):
        read_phase1(nobest, "recall")
    (nobest / "best").mkdir()
    (nobest / "best" / "model.safetensors").write_text("x")
    with pytest.raises(ReflectError, match="has no recall stage"):
        read_phase1(nobest, "recall")


def test_cli_bad_from_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "notarun").mkdir()
    code = main(["reflect", "--from", str(tmp_path / "notarun"), "--run", str(tmp_path / "p2"),
                 "--db", str(tmp_path / "s.db")])
    assert code == 2
    err = capsys.readouterr().err
    assert "not a phase-1 run" in err and "notarun" in err
    assert not (tmp_path / "p2").exists()


def test_config_checks():
    with pytest.raises(ReflectError, match="stage-type"):
        ReflectConfig(from_run="x", stage_type="summarize").check()
    with pytest.raises(ReflectError, match="--pairs"):
        ReflectConfig(from_run="x", pairs="some").check()
    with pytest.raises(ReflectError, match="--samples"):
        ReflectConfig(from_run="x", samples=1).check()


def store_rows(db, sql):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_reflect_two_iterations_records_everything(tmp_path, fakes):
    p1 = phase1_run(tmp_path)
    config = make_config(tmp_path, p1)
    qs, teacher, val = data()
    events = []
    result = reflect(config, on_progress=events.append, questions=qs, teacher=teacher, val_questions=val)
    run = tmp_path / "p2"
    assert [r["iteration"] for r in result.iterations] == [1, 2]
    assert result.baseline_val_acc is not None

    its = runs.read_metrics(run, "iteration")
    assert [r["iteration"] for r in its] == [1, 2]
    for r in its:
        # 4 samples per question: 2 right, 2 wrong -> 2 recall pairs each; analyses on 2 chosen recalls each
        assert r["pairs"]["recall"] == 6
        assert r["pairs"]["analyze"] > 0
        for key in ("dpo_loss", "reward_margin", "reward_accuracy", "val_acc"):
            assert isinstance(r[key], float)
    assert its[0]["start"] == str(p1 / "best")
    assert its[1]["start"] == str(run / "iter_1" / "best")  # iteration 2 starts from iteration 1's best
    assert (run / "iter_1" / "best").is_dir() and (run / "iter_2" / "best").is_dir()
    assert (run / "best").is_dir()
    assert not list(run.glob("*.partial"))
    pairs = [json.loads(line) for line in (run / "iter_1" / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == its[0]["pairs_total"]
    assert runs.read_config(run)["command"] == "reflect"
    assert [r["iteration"] for r in runs.read_metrics(run, "baseline")] == [0]
    assert runs.read_metrics(run, "dpo") and runs.read_metrics(run, "end")

    db = str(tmp_path / "store.db")
    by_iter = dict(store_rows(db, "SELECT iteration, COUNT(*) FROM traces GROUP BY iteration"))
    # 3 questions x 4 recall samples + 6 chosen recalls x 4 analysis samples, each iteration
    assert by_iter == {1: 12 + 24, 2: 12 + 24}
    pair_iters = dict(store_rows(db, "SELECT iteration, COUNT(*) FROM pairs GROUP BY iteration"))
    assert pair_iters[1] == its[0]["pairs_total"] and pair_iters[2] == its[1]["pairs_total"]

    assert fakes.calls == 3  # the starting model, then one schedule cycle per iteration
    assert result.baseline_val_acc == pytest.approx(0.1) and [r["val_acc"] for r in its] == pytest.approx([0.2, 0.3])
    assert result.best_iteration == 2
    assert any(e.get("kind") == "iteration" for e in events)
    assert any(e.get("phase") == "train" for e in events)

    # the same command again resumes: both iterations are done, nothing is redone
    again = reflect(config, questions=qs, teacher=teacher, val_questions=val)
    assert [r["iteration"] for r in again.iterations] == [1, 2]
    assert dict(store_rows(db, "SELECT iteration, COUNT(*) FROM traces GROUP BY iteration")) == by_iter


def test_zero_pairs_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(phase2, "sample_recalls", fake_recall_sampler(all_right=True))
    monkeypatch.setattr(phase2, "sample_analyses", fake_analyze_sampler)
    monkeypatch.setattr(phase2, "evaluator", lambda *a, **k: lambda s: {"accuracy": 0.0, "invalid_rate": 0.0, "n": 3})
    p1 = phase1_run(tmp_path)
    qs, teacher, val = data()
    with pytest.raises(ReflectError, match="no preference pairs") as e:
        reflect(make_config(tmp_path, p1), questions=qs, teacher=teacher, val_questions=val)
    assert "3 had every sampled trace right (no wrong recall to reject)" in str(e.value)
    assert "Analyses are sampled on chosen recalls, and there were none." in str(e.value)
    assert "pairs need a question with both" not in str(e.value)
    assert not (tmp_path / "p2").exists()
    db = str(tmp_path / "store.db")
    assert store_rows(db, "SELECT COUNT(*) FROM traces") == [(0,)]
    assert store_rows(db, "SELECT COUNT(*) FROM pairs") == [(0,)]


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_curated_pairs_replace_the_automatic_ones(tmp_path, monkeypatch, kind):
    from tinythinker.store import Store

    def no_sampling(*a, **k):
        raise AssertionError("--pairs curated samples nothing")

    monkeypatch.setattr(phase2, "sample_recalls", no_sampling)
    monkeypatch.setattr(phase2, "evaluator", lambda *a, **k: lambda s: {"accuracy": 0.5, "invalid_rate": 0.0, "n": 3})
    p1 = phase1_run(tmp_path, kind=kind)
    qs, teacher, val = data()
    db = str(tmp_path / "store.db")
    with Store(db) as store:
        store.add_pairs([{"prompt": stages.recall_input(qs[0]), "chosen": "the house has water",
                          "rejected": "the road is fire", "stage": "recall", "question_id": "q0"}],
                        iteration=None, source="curated")
    config = make_config(tmp_path, p1, pairs="curated", iterations=1, samples=1)
    result = reflect(config, questions=qs, teacher=teacher, val_questions=val)
    it = result.iterations[0]
    assert it["curated_pairs"] == 1 and it["auto_pairs"] == 0 and it["pairs"]["recall"] == 1
    pairs = [json.loads(line) for line in (tmp_path / "p2" / "iter_1" / "pairs.jsonl").read_text().splitlines()]
    assert pairs[0]["source"] == "curated" and pairs[0]["chosen"] == "the house has water"
    assert (tmp_path / "p2" / "best").is_dir() and it["reward_margin"] is not None


def _bad_curated_store(db, qs):
    """Two curated pairs whose chosen side led to the wrong answer and the rejected one to the right answer."""
    from tinythinker.store import Store

    with Store(db) as store:
        store.add_pairs([{"prompt": stages.recall_input(q), "chosen": f"the {q.id} is far away",
                          "rejected": f"the {q.id} is in the house", "stage": "recall", "question_id": q.id,
                          "provenance": {"chosen_correct": False, "rejected_correct": True}} for q in qs[:2]],
                        iteration=None, source="curated")


@pytest.mark.parametrize("refuse", [True, False])
def test_refuse_failing_pairs_refuses_bad_curated_pairs_before_anything_and_off_trains(tmp_path, monkeypatch,
                                                                                         refuse):
    p1 = tmp_path / "p1"
    (p1 / "best").mkdir(parents=True)
    (p1 / "best" / "config.json").write_text("{}")  # never loaded: the test hands the student in
    (p1 / "config.json").write_text(json.dumps({"command": "train", "data": "csqa",
                                                "stage_type": "recall_analyze_summarize", "seed": 0}))
    qs, teacher, val = data()
    db = str(tmp_path / "store.db")
    _bad_curated_store(db, qs)
    evals, trained, events = [], [], []
    monkeypatch.setattr(phase2, "evaluator", lambda *a, **k: lambda s: evals.append(1) or {
        "accuracy": 0.5, "invalid_rate": 0.0, "n": 3})

    def fake_train(student, pairs, config, workdir, *a, **k):
        trained.append(pairs)
        (workdir / runs.BEST).mkdir()
        return {"steps": 1, "evals": [], "dpo_loss": 0.1, "reward_margin": 0.0, "reward_accuracy": 0.5,
                "val_acc": 0.5}

    monkeypatch.setattr(phase2, "train_iteration", fake_train)
    config = make_config(tmp_path, p1, pairs="curated", iterations=1, samples=1, refuse_failing_pairs=refuse)
    go = dict(student=object(), questions=qs, teacher=teacher, val_questions=val, on_progress=events.append)
    if refuse:
        with pytest.raises(ReflectError) as e:
            reflect(config, **go)
        msg = str(e.value)
        assert msg.startswith("--refuse-failing-pairs: the 2 curated pairs for recall, analyze fail 1 pair check(s)")
        assert "consistent outcome = 0 (wanted >= 0.8; 2 pairs judged)" in msg
        assert "Nothing was trained or written" in msg
        assert not trained and not evals and not (tmp_path / "p2").exists()
        assert store_rows(db, "SELECT COUNT(*) FROM traces") == [(0,)]
        assert store_rows(db, "SELECT COUNT(*) FROM pairs") == [(2,)]
    else:
        result = reflect(config, **go)
        assert len(trained) == 1 and len(trained[0]) == 2 and result.iterations[0]["curated_pairs"] == 2
        assert (tmp_path / "p2" / "best").is_dir()
        # The refusal switch is no part of the experiment: config.json does not hold it.
        assert "refuse_failing_pairs" not in runs.read_config(tmp_path / "p2")
    checks = [ev for ev in events if ev["kind"] == "pair_checks"]
    assert len(checks) == 1 and checks[0]["failed"] == ["consistent outcome"]
    assert "FAIL  consistent outcome" in checks[0]["text"]


def test_cli_refuse_failing_pairs_reaches_the_config_and_prints_the_table(tmp_path):
    import argparse
    import io

    from tinythinker.commands import reflect as cmd

    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())
    base = ["reflect", "--from", "p1", "--run", "p2", "--pairs", "curated"]
    assert cmd.config_from_args(parser.parse_args([*base, "--refuse-failing-pairs"])).refuse_failing_pairs is True
    assert cmd.config_from_args(parser.parse_args(base)).refuse_failing_pairs is False
    out = io.StringIO()
    cmd.ProgressPrinter(out)({"kind": "pair_checks", "pairs": 2, "ok": False, "failed": ["duplicates"],
                              "text": "FAIL  duplicates  0.5"})
    assert "pair checks on 2 curated pairs (fail: duplicates):\nFAIL  duplicates  0.5" in out.getvalue()


@pytest.mark.slow
def test_samplers_on_a_tiny_student():
    from tinythinker.pairs import AnalyzeContext
    from tinythinker.tiny import tiny_student

    student = tiny_student("seq2seq", seed=0)
    config = ReflectConfig(from_run="x", samples=2, sample_batch_size=8)
    qs = [question(0), question(1)]
    seen = []
    traces = phase2.sample_recalls(student, qs, config, stages.DEFAULT_STAGE_TYPE, False,
                                   lambda d, t: seen.append((d, t)), seed=1)
    assert len(traces) == 4 and seen[-1] == (4, 4)
    assert [t.question.id for t in traces] == ["q0"] * 2 + ["q1"] * 2
    assert all(t.sampling["recall"]["do_sample"] and t.sampling["recall"]["temperature"] == 0.7
               and t.sampling["recall"]["top_k"] == 0 and not t.sampling["analyze"]["do_sample"] for t in traces)
    ctx = [AnalyzeContext(qs[0], "the water is cold"), AnalyzeContext(qs[1], "a tree")]
    traces = phase2.sample_analyses(student, ctx, config, stages.DEFAULT_STAGE_TYPE, False, seed=1)
    assert len(traces) == 4
    assert [t.recall for t in traces] == ["the water is cold"] * 2 + ["a tree"] * 2
    assert all(set(t.analyses) == {"A", "B", "C"} for t in traces)
    assert all(t.sampling["analyze"]["do_sample"] and not t.sampling["summarize"]["do_sample"] for t in traces)
    assert [t.sampling["sample_index"] for t in traces] == [0, 1, 0, 1]


@pytest.mark.slow
def test_a_failed_iteration_leaves_nothing_half_written_and_a_rerun_resumes(tmp_path, fakes, monkeypatch):
    p1 = phase1_run(tmp_path)
    config = make_config(tmp_path, p1)
    qs, teacher, val = data()
    real_train = phase2.train_iteration

    def fail_second(student, pairs, config, workdir, *a, **k):
        if workdir.name.startswith("iter_2"):
            (workdir / "half-written").write_text("x")
            raise ReflectError("killed in the middle of iteration 2")
        return real_train(student, pairs, config, workdir, *a, **k)

    monkeypatch.setattr(phase2, "train_iteration", fail_second)
    with pytest.raises(ReflectError, match="iteration 2"):
        reflect(config, questions=qs, teacher=teacher, val_questions=val)
    run = tmp_path / "p2"
    assert (run / "iter_1" / "best").is_dir()
    assert not (run / "iter_2").exists() and not list(run.glob("*.partial"))
    assert [r["iteration"] for r in runs.read_metrics(run, "iteration")] == [1]
    db = str(tmp_path / "store.db")
    assert [i for (i,) in store_rows(db, "SELECT DISTINCT iteration FROM traces")] == [1]
    assert [i for (i,) in store_rows(db, "SELECT DISTINCT iteration FROM pairs")] == [1]

    monkeypatch.setattr(phase2, "train_iteration", real_train)
    result = reflect(config, questions=qs, teacher=teacher, val_questions=val)
    assert [r["iteration"] for r in result.iterations] == [1, 2]
    assert [r["iteration"] for r in runs.read_metrics(run, "iteration")] == [1, 2]
    assert len(runs.read_metrics(run, "baseline")) == 1
    assert sorted(i for (i,) in store_rows(db, "SELECT DISTINCT iteration FROM traces")) == [1, 2]


def all_wrong_sampler(student, questions, config, stage_type, restrict, on_progress=None, seed=0):
    return [Trace(q, f"the {WORDS[s]} is bad {s}", {"A": "a", "B": "b", "C": "c"}, "So the answer is option B.", "B",
                  False, sampling={"sample_index": s}, stage_type=stage_type)
            for q in questions for s in range(config.samples)]


def test_all_wrong_samples_pair_with_teacher_recalls_and_say_so_when_there_are_none(tmp_path, monkeypatch):
    monkeypatch.setattr(phase2, "sample_recalls", all_wrong_sampler)
    monkeypatch.setattr(phase2, "sample_analyses", fake_analyze_sampler)
    monkeypatch.setattr(phase2, "evaluator", lambda *a, **k: lambda s: {"accuracy": 0.0, "invalid_rate": 0.0, "n": 3})
    p1 = phase1_run(tmp_path)
    qs, teacher, val = data()
    # Teacher recalls fill the chosen side when every sample is wrong: pairs are built.
    result = reflect(make_config(tmp_path, p1, iterations=1, stage_type="recall"), questions=qs, teacher=teacher,
                     val_questions=val)
    assert result.iterations[0]["pairs"]["recall"] == 3 * 4
    # --no-teacher-fill: the student's own recalls only, so all-wrong questions give no pair; recorded in the
    # config (the default is not, so older runs resume).
    config = make_config(tmp_path, p1, iterations=1, stage_type="recall", run=str(tmp_path / "p2-own"),
                         teacher_fill=False)
    with pytest.raises(ReflectError, match="0 of them with a teacher recall"):
        reflect(config, questions=qs, teacher=teacher, val_questions=val)
    assert config.resolved()["teacher_fill"] is False and "teacher_fill" not in ReflectConfig(from_run="x").resolved()
    no_recalls = {q.id: [Rationale(None, {"A": "ta"})] for q in qs}
    with pytest.raises(ReflectError, match="no preference pairs") as e:
        reflect(make_config(tmp_path, p1, iterations=1, stage_type="recall", run=str(tmp_path / "p2b")),
                questions=qs, teacher=no_recalls, val_questions=val)
    assert ("Of 3 questions, 0 had every sampled trace right (no wrong recall to reject), 0 some right and some "
            "wrong, and 3 every one wrong, 0 of them with a teacher recall to take the chosen side.") in str(e.value)


def test_cli_reflect_prints_progress_and_a_summary(tmp_path, fakes, capsys, monkeypatch):
    p1 = phase1_run(tmp_path)
    qs, teacher, val = data(2)
    monkeypatch.setattr(phase2, "load_reflect_data", lambda source, config: (qs, teacher, val))
    code = main(["reflect", "--from", str(p1), "--run", str(tmp_path / "p2"), "--iterations", "1",
                 "--samples", "2", "--batch-size", "8", "--cycles", "1", "--db", str(tmp_path / "s.db")])
    assert code == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)  # stdout is the JSON summary only
    assert [r["iteration"] for r in summary["iterations"]] == [1]
    assert "sample_recall" in out.err and "iteration 1 done" in out.err


def fingerprint(student):
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(student.model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


class ScriptedEval:
    """Validation stand-in with non-monotonic scores, in call order; remembers the weights each score went to."""

    def __init__(self, scores):
        self.scores = list(scores)
        self.seen = []

    def __call__(self, questions, stage_type, batch_size, restrict):
        def evaluate(student):
            acc = self.scores[len(self.seen)]
            self.seen.append((acc, fingerprint(student)))
            return {"accuracy": acc, "invalid_rate": 0.0, "n": len(questions)}
        return evaluate


def test_best_cycle_and_best_iteration_are_kept_when_scores_go_up_and_down(tmp_path, monkeypatch):
    from tinythinker.students import load_student

    monkeypatch.setattr(phase2, "sample_recalls", fake_recall_sampler())
    monkeypatch.setattr(phase2, "sample_analyses", fake_analyze_sampler)
    # baseline, then two cycles per iteration: iteration 1 peaks at its first cycle, iteration 2 at its last,
    # and iteration 1 is the better one
    scripted = ScriptedEval([0.3, 0.5, 0.4, 0.2, 0.45])
    monkeypatch.setattr(phase2, "evaluator", scripted)
    p1 = phase1_run(tmp_path)
    qs, teacher, val = data()
    result = reflect(make_config(tmp_path, p1, cycles=2), questions=qs, teacher=teacher, val_questions=val)
    run = tmp_path / "p2"
    one, two = result.iterations
    assert [e["accuracy"] for e in one["evals"]] == [0.5, 0.4] and one["val_acc"] == 0.5
    assert one["best_local_step"] == one["cycle_steps"]  # the first cycle, not the last
    assert [e["accuracy"] for e in two["evals"]] == [0.2, 0.45] and two["val_acc"] == 0.45
    assert two["best_local_step"] == two["steps"]
    assert result.best_iteration == 1 and result.baseline_val_acc == 0.3
    weights = [fp for _, fp in scripted.seen]
    assert len(set(weights)) == 5  # every evaluation saw other weights
    assert fingerprint(load_student(run / "iter_1" / "best")) == weights[1]  # the best cycle's, not the last's
    assert fingerprint(load_student(run / "iter_2" / "best")) == weights[4]
    assert fingerprint(load_student(run / "best")) == weights[1]  # the best iteration's best
    assert two["start"] == str(run / "iter_1" / "best")  # and iteration 2 started from it


def test_reflect_on_a_path_based_phase1_run_goes_through_the_real_loader(tmp_path, fakes):
    folder = tmp_path / "mine"
    folder.mkdir()
    rows = [{"id": f"m{i}", "question": f"where is the {WORDS[i]} {i}?", "options": ["house", "river", "garden"],
             "answer": "A", "recall": f"the {WORDS[i]} is in the house.", "analyses": ["yes", "no", "no"]}
            for i in range(5)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "validation.jsonl").write_text(json.dumps({**rows[0], "id": "v0"}) + "\n")
    p1 = phase1_run(tmp_path)
    cfg = json.loads((p1 / "config.json").read_text())
    (p1 / "config.json").write_text(json.dumps({**cfg, "data": "jsonl", "path": str(folder)}))
    source = read_phase1(p1, "recall_analyze")
    qs, teacher, val = phase2.load_reflect_data(source, make_config(tmp_path, p1, limit=3))
    assert [q.id for q in qs] == ["m0", "m1", "m2"] and [q.id for q in val] == ["v0"]
    assert teacher["m1"][0].recall == "the tree is in the house."
    # ... and the whole command, which failed with "--data jsonl needs a path" before
    result = reflect(make_config(tmp_path, p1, iterations=1))
    assert [r["iteration"] for r in result.iterations] == [1]


def test_memory_knobs_are_checked_and_do_not_change_the_experiment():
    for bad in (3, 0):
        with pytest.raises(ReflectError, match=f"--micro-batches must be at least 1 and divide --batch-size 8, got {bad}"):
            ReflectConfig(from_run="x", batch_size=8, micro_batches=bad).check()
    from tinythinker.pairs import micro_batch_count

    # The default: micro-batches of at most 4 pairs on CPU, one piece on a GPU; an explicit count wins.
    assert micro_batch_count(32, None, on_gpu=False) == 8
    assert micro_batch_count(6, None, on_gpu=False) == 2
    assert micro_batch_count(5, None, on_gpu=False) == 5
    assert micro_batch_count(32, None, on_gpu=True) == 1
    assert micro_batch_count(32, 2, on_gpu=False) == 2
    plain, lean = ReflectConfig(from_run="x"), ReflectConfig(from_run="x", micro_batches=4, gradient_checkpointing=True)
    lean.check()
    assert plain.resolved() == lean.resolved()  # a run started without them resumes with them
    import argparse

    from tinythinker.commands import reflect as cmd

    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())
    got = cmd.config_from_args(parser.parse_args(["reflect", "--from", "p1", "--run", "p2", "--micro-batches", "4",
                                                  "--gradient-checkpointing"]))
    assert (got.micro_batches, got.gradient_checkpointing, got.teacher_fill) == (4, True, True)
    assert cmd.config_from_args(parser.parse_args(["reflect", "--from", "p1", "--run", "p2",
                                                   "--no-teacher-fill"])).teacher_fill is False


def test_lora_is_applied_only_when_asked_and_only_once():
    from tinythinker.tiny import tiny_student

    student = tiny_student("causal", seed=0)
    assert phase2.with_lora(student, ReflectConfig(from_run="x")) is student
    assert not hasattr(student.model, "peft_config")
    wrapped = phase2.with_lora(student, ReflectConfig(from_run="x", lora_r=4, lora_alpha=8))
    assert hasattr(wrapped.model, "peft_config") and wrapped.lora["r"] == 4 and wrapped.lora["alpha"] == 8
    model = wrapped.model
    # a student that already carries an adapter (a LoRA phase-1 run, an earlier iteration's best) keeps it
    assert phase2.with_lora(wrapped, ReflectConfig(from_run="x", lora_r=16)).model is model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with pytest.raises(ReflectError, match="--lora-r"):
        ReflectConfig(from_run="x", lora_r=-1).check()


@pytest.mark.slow
def test_reflect_with_lora_trains_an_adapter_and_resumes_from_it(tmp_path, fakes):
    from tinythinker.students import load_student

    p1 = phase1_run(tmp_path, kind="causal")
    qs, teacher, val = data()
    result = reflect(make_config(tmp_path, p1, lora_r=4), questions=qs, teacher=teacher, val_questions=val)
    assert [r["iteration"] for r in result.iterations] == [1, 2]
    run = tmp_path / "p2"
    for folder in (run / "iter_1" / "best", run / "iter_2" / "best", run / "best"):
        assert hasattr(load_student(folder).model, "peft_config")  # adapter folders, loadable as they are


def test_from_accepts_a_shipped_phase1_student_and_refuses_a_shipped_reflected_one():
    source = read_phase1("tinythinker-smollm2-p1-equal", "recall_analyze")
    assert source.best == source.path and (source.best / "adapter_model.safetensors").is_file()
    assert source.config["stage_type"] == "recall_analyze_summarize"
    assert source.config["restrict_answer"] == "score" and source.config["data"] == "csqa"
    with pytest.raises(ReflectError, match="shipped reflected model; phase 2 starts from a phase-1 student"):
        read_phase1("tinythinker-smollm2-reflected", "recall_analyze")
    with pytest.raises(ReflectError, match="or the name of a shipped phase-1 student"):
        read_phase1("no-such-student", "recall_analyze")
