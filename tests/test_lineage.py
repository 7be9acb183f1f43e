"""Lineage: what trained a phase-2 model (its run's own record), the sampling behind every automatic pair, the new
model's traces in the store, and Compare restricted to the questions whose curated pairs trained a model."""

import json
import shutil

import pytest
from test_phase2 import data, fake_analyze_sampler, fake_recall_sampler, make_config, phase1_run

from demo import compare as compare_tab
from demo.context import AppContext
from tinythinker import phase2, runs, stages
from tinythinker.compare import (
    LineageError,
    curated_question_ids,
    parent_checkpoint,
    trained_iterations,
    trained_pairs,
)
from tinythinker.phase2 import reflect
from tinythinker.store import Store
from tinythinker.tiny import tiny_student
from tinythinker.types import Trace
from tinythinker.workspace import Workspace


def evaluator_with_traces(questions, stage_type, batch_size, restrict):
    """Validation stand-in that, like the real one, hands back its traces; later evaluations score higher."""
    calls = []

    def evaluate(student):
        calls.append(1)
        traces = [Trace(q, f"recall {q.id}", {"A": "a", "B": "b", "C": "c"}, "So the answer is option A.", "A",
                        True, sampling={"sample_index": 0}, stage_type=stage_type) for q in questions]
        return {"accuracy": 0.1 * len(calls), "invalid_rate": 0.0, "n": len(questions), "val_traces": traces}
    return evaluate


def test_a_reflect_run_records_what_trained_it_with_sampling_and_files_the_new_models_traces(tmp_path, monkeypatch):
    monkeypatch.setattr(phase2, "sample_recalls", fake_recall_sampler())
    monkeypatch.setattr(phase2, "sample_analyses", fake_analyze_sampler)
    monkeypatch.setattr(phase2, "evaluator", evaluator_with_traces)
    p1 = phase1_run(tmp_path)
    qs, teacher, val = data()
    db = tmp_path / "store.db"
    with Store(db) as store:
        store.add_pairs([{"prompt": stages.recall_input(qs[1]), "chosen": "the tree is good",
                          "rejected": "the tree is bad", "stage": "recall", "question_id": qs[1].id}],
                        iteration=None, source="curated")
    config = make_config(tmp_path, p1, pairs="both", iterations=1)
    reflect(config, questions=qs, teacher=teacher, val_questions=val)
    run = tmp_path / "p2"

    recorded = [json.loads(x) for x in (run / "iter_1" / "pairs.jsonl").read_text().splitlines()]
    assert trained_iterations(run / "best") == trained_iterations(run / "iter_1" / "best") == [1]
    assert trained_pairs(run / "best") == [{**p, "iteration": 1} for p in recorded]
    assert curated_question_ids(run / "best") == curated_question_ids(run) == [qs[1].id]
    assert parent_checkpoint(run / "best") == p1 / "best"

    # Every automatic pair says which checkpoint, iteration and sampling wrote it: in the run's record and the store.
    auto = [p for p in recorded if p["source"] != "curated"]
    assert {p["provenance"]["sampling"]["sampled_stage"] for p in auto} == {"recall", "analyze"}
    want = {"temperature": config.temperature, "top_k": 0, "seed": 1, "num_samples": config.samples}
    assert all(p["provenance"]["sampling"].items() >= want.items() for p in auto)
    with Store(db) as store:
        stored = store.pairs(source="auto")
        assert len(stored) == len(auto)
        assert all(p.iteration == 1 and p.provenance["model"] == str(p1 / "best")
                   and p.provenance["sampling"]["seed"] == 1 for p in stored)
        # The new model's own validation traces, under the checkpoint's name and iteration.
        new_model = str(run / "iter_1" / "best")
        mine = [t for t in store.iter_traces() if t.model == new_model]
    assert sorted(t.trace.question.id for t in mine) == sorted(q.id for q in val)
    assert all(t.iteration == 1 and t.trace.sampling["reflect"] == "validation" for t in mine)
    assert runs.read_metrics(run, "iteration")[0]["val_traces"] == len(val)
    assert not any("val_traces" in r for r in runs.read_metrics(run, "eval"))  # counted, never dumped


# ---- a phase-2 run laid out by hand (no training): the library function, then Compare's filter -------------------

def _ws(tmp_path, data_dir) -> Workspace:
    root = tmp_path / "runs"
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)):
        tiny_student("bert2bert", seed=seed).save(root / name / "best")
        (root / name / "config.json").write_text(json.dumps({"command": "train", "data": "csqa",
                                                            "stage_type": "recall_analyze_summarize"}))
    return Workspace(runs_dir=root, db=tmp_path / "annotations" / "t.db", data_dir=data_dir)


def _reflect_run(ws, name, pairs_mode, pairs, val_acc=(0.5,)):
    """A phase-2 run from tiny-a as phase 2 leaves it: config, iteration records, iter_<k>/ with pairs.jsonl and
    best/, and best/ (a copy of the best iteration's)."""
    run = ws.runs_dir / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"command": "reflect", "from_run": str(ws.runs_dir / "tiny-a"),
                                                 "pairs": pairs_mode}))
    with open(run / "metrics.jsonl", "w") as f:
        for k, acc in enumerate(val_acc, 1):
            tiny_student("bert2bert", seed=10 + k).save(run / f"iter_{k}" / "best")
            (run / f"iter_{k}" / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs[k - 1]))
            f.write(json.dumps({"kind": "iteration", "iteration": k, "step": k, "val_acc": acc}) + "\n")
    best = max(range(len(val_acc)), key=lambda i: val_acc[i]) + 1
    shutil.copytree(run / f"iter_{best}" / "best", run / "best")
    return run


def _pair(q, source="curated", qid=None, provenance=None):
    return {"prompt": stages.recall_input(q), "chosen": f"good {q.id}", "rejected": f"bad {q.id}", "stage": "recall",
            "question_id": q.id if qid is None else qid, "source": source, "provenance": provenance or {}}


@pytest.fixture
def lineage_ws(tmp_path, data_dir):
    ws = _ws(tmp_path, data_dir)
    ctx = AppContext(ws=ws, shipped_root=tmp_path / "none")
    qs = ctx.questions("csqa", "validation")
    with Store(ws.db) as store:
        [tid] = store.import_traces([Trace(qs[3], "a recall", {}, "So the answer is option A.", "A",
                                           qs[3].answer == "A")], model="tiny-a/best")
    # Iteration 1: a curated pair for q2, then q0, an automatic one for q1; iteration 2 (the best) adds q2 again
    # and an imported curated pair without a question id whose provenance names the store's trace on q3.
    pairs = [[_pair(qs[2]), _pair(qs[0]), _pair(qs[1], source="auto")],
             [_pair(qs[2]), _pair(qs[3], qid="", provenance={"chosen": [{"trace_id": tid}]})]]
    _reflect_run(ws, "p2-cur", "curated", pairs, val_acc=(0.4, 0.6))
    _reflect_run(ws, "p2-auto", "auto", [[_pair(qs[1], source="auto")]])
    return ctx, qs


def test_the_questions_whose_curated_pairs_trained_a_model(lineage_ws):
    ctx, qs = lineage_ws
    root = ctx.ws.runs_dir
    with Store(ctx.ws.db) as store:
        assert curated_question_ids("p2-cur/best", store, root) == [qs[2].id, qs[0].id, qs[3].id]
        # iteration 1's checkpoint learnt from iteration 1 only
        assert curated_question_ids("p2-cur/iter_1/best", store, root) == [qs[2].id, qs[0].id]
    assert curated_question_ids(root / "p2-cur" / "best") == [qs[2].id, qs[0].id]  # no store: no id for q3
    with pytest.raises(LineageError, match="automatic pairs only"):
        curated_question_ids("p2-auto/best", runs_dir=root)
    with pytest.raises(LineageError, match="not a phase-2 model"):
        curated_question_ids("tiny-a/best", runs_dir=root)


def test_compare_filter_shows_only_the_curated_questions_before_and_after(lineage_ws):
    ctx, qs = lineage_ws
    order = [q.id for q in qs if q.id in {qs[0].id, qs[2].id, qs[3].id}]
    # Taken before the limit (the curated questions need not be among the split's first), in split order.
    text, _, _, rows, _ = compare_tab.split_report(ctx, "tiny-a/best", "p2-cur/best", "csqa", "validation", 3,
                                                   "all questions", "", "gold letter", curated=True)
    assert [r[0] for r in rows] == order and "only the 3 question(s) whose curated pairs trained B" in text
    assert all(r[3] and r[4] for r in rows)  # A's answer (before) and B's (after)
    # A row side by side, from the same cached traces.
    loads = ctx.students.loads
    out = compare_tab.split_question(ctx, "tiny-a/best", "p2-cur/best", "csqa", "validation", 0, order[1],
                                     curated=True)
    assert next(q for q in qs if q.id == order[1]).stem in out[0]
    assert ctx.students.loads == loads
    # The other filters still apply on top.
    _, _, _, same, _ = compare_tab.split_report(ctx, "tiny-a/best", "p2-cur/best", "csqa", "validation", 0,
                                                "same answer", "", "gold letter", curated=True)
    assert {r[0] for r in same} <= set(order)
    with pytest.raises(ValueError, match="only a phase-2 model trained on curated pairs"):
        compare_tab.split_report(ctx, "tiny-a/best", "tiny-b/best", "csqa", "validation", 0, "all questions", "",
                                 "gold letter", curated=True)


def test_compare_preselects_the_new_reflected_model_against_its_parent(lineage_ws):
    ctx, _ = lineage_ws
    assert ctx.default_pair()[0] == "tiny-a/best"
    newest = ctx.default_pair()
    # The user's own picks stay while the default pair is the one last offered ...
    a, b, offered = compare_tab.refresh_pair(ctx, "tiny-b/best", "tiny-a/best", list(newest))
    assert (a["value"], b["value"], offered) == ("tiny-b/best", "tiny-a/best", list(newest))
    # ... and a newer reflected model (a job has ended) comes preselected against its parent.
    run = _reflect_run(ctx.ws, "p2-new", "both", [[]])
    assert ctx.default_pair() == ("tiny-a/best", "p2-new/best")
    a, b, offered = compare_tab.refresh_pair(ctx, "tiny-b/best", "tiny-a/best", list(newest))
    assert (a["value"], b["value"], offered) == ("tiny-a/best", "p2-new/best", ["tiny-a/best", "p2-new/best"])
    assert parent_checkpoint(run / "iter_1" / "best") == ctx.ws.runs_dir / "tiny-a" / "best"
