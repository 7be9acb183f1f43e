"""Each student that ships under demo/models/ loads by name and reproduces its cached validation traces."""

import shutil

import pytest

from tinythinker.pipeline import read_traces, run_pipeline
from tinythinker.shipped import ShippedModel, cached_questions, list_shipped, trace_questions
from tinythinker.students import load_student

SHIPPED = list_shipped()
FIRST = 2  # questions re-run per model: SmolLM2 on CPU takes a few seconds each


def test_two_students_ship_with_the_app():
    roles = {m.role for m in SHIPPED}
    assert {"phase1", "reflected"} <= roles, f"demo/models/ should hold a phase-1 and a reflected student: {SHIPPED}"
    for m in SHIPPED:
        size = (m.folder / "adapter_model.safetensors").stat().st_size
        assert size <= 10_000_000, f"{m.name}: adapter is {size} bytes, over 10 MB"
        assert m.has_traces and m.card_path.is_file()


def test_the_shipped_traces_give_the_first_validation_questions_without_data():
    """What the app shows without a data folder (issue 14): the longest cached list, and trace i of every shipped
    model is on question i, so question # i means the same with and without the data."""
    cached = cached_questions("csqa", "validation")
    longest = max(len(trace_questions(m.traces_path)) for m in SHIPPED)
    assert len(cached) == longest >= 200 and all(q.answer and q.source == "csqa" for q in cached)
    for m in SHIPPED:
        ids = [q.id for q in trace_questions(m.traces_path)]
        assert ids == [q.id for q in cached[:len(ids)]], m.name
    assert cached_questions("obqa", "validation") == [] and cached_questions("csqa", "train") == []


@pytest.mark.slow
@pytest.mark.parametrize("model", SHIPPED, ids=[m.name for m in SHIPPED])
def test_shipped_adapter_reproduces_its_cached_traces(model):
    cached = read_traces(model.traces_path)[:FIRST]
    student = load_student(model.name).merge_adapter()
    assert student.answer_format == model.answer_format
    fresh = run_pipeline(student, [t.question for t in cached], stage_type=model.stage_type,
                         restrict_answer=model.restrict_answer, batch_size=FIRST)
    for a, b in zip(cached, fresh, strict=True):
        assert (a.recall, a.analyses, a.summary, a.predicted) == (b.recall, b.analyses, b.summary, b.predicted), \
            a.question.id


def test_best_phase1_is_the_phase1_student_with_the_highest_validation_accuracy(tmp_path):
    from tinythinker.shipped import best_phase1

    def model(name, role, acc):
        return ShippedModel(name=name, folder=tmp_path / name, role=role, val_acc=acc)

    models = [model("p1", "phase1", 0.193), model("unknown", "phase1", None), model("p1-equal", "phase1", 0.34),
              model("reflected", "reflected", 0.9)]
    assert best_phase1(models).name == "p1-equal"
    assert best_phase1([model("unknown", "phase1", None), model("p1", "phase1", 0.1)]).name == "p1"
    assert best_phase1([model("reflected", "reflected", 0.9)]) is None
    # ... and by name, as the benchmarks take their default student: the shipped one, or the fallback
    from tinythinker.shipped import best_phase1_name

    assert best_phase1_name("fallback") == best_phase1(SHIPPED).name
    assert best_phase1_name("fallback", tmp_path / "none") == "fallback"


def test_an_answer_only_baseline_ships_beside_but_never_stands_in_for_the_tinythinker_students(tmp_path,
                                                                                                  monkeypatch):
    """The answer-only twin scores higher than the staged student at this budget; it must still not be what Step
    through opens on, what Compare preselects, or what phase 2 starts from."""
    import json

    from tinythinker.phase2 import ReflectError, _shipped_phase1
    from tinythinker.shipped import ROLE_WORDS, best_phase1, read_shipped, shipped_baseline, shipped_pair

    for name, role, parent, acc in [("p1", "phase1", None, 0.31), ("refl", "reflected", "p1", 0.30),
                                    ("answer-only", "baseline", None, 0.35)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "shipped.json").write_text(json.dumps(
            {"name": name, "role": role, "parent": parent, "val_acc": acc, "stage_type":
             "summarize" if role == "baseline" else "recall_analyze_summarize"}))
    models = list_shipped(tmp_path)
    assert [(m.name, m.role) for m in models] == [("p1", "phase1"), ("refl", "reflected"), ("answer-only", "baseline")]
    assert read_shipped(tmp_path / "answer-only").label == "answer-only (shipped: answer-only baseline, val 35.0%)"
    assert ROLE_WORDS["baseline"] == "answer-only baseline"
    assert best_phase1(models).name == "p1"
    assert [m.name for m in shipped_pair(models)] == ["p1", "refl"]
    # A better reflected model of the same parent is the one compared, whatever its name; one whose parent does
    # not ship is passed over while one that does exists.
    for name, parent, acc in [("a-refl", "p1", 0.29), ("z-refl", "p1", 0.32), ("orphan", "gone", 0.40)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "shipped.json").write_text(json.dumps(
            {"name": name, "role": "reflected", "parent": parent, "val_acc": acc,
             "stage_type": "recall_analyze_summarize"}))
    assert [m.name for m in shipped_pair(list_shipped(tmp_path))] == ["p1", "z-refl"]
    for name in ("a-refl", "z-refl", "orphan"):
        shutil.rmtree(tmp_path / name)
    assert shipped_baseline(models).name == "answer-only" and shipped_baseline(models[:2]) is None
    monkeypatch.setenv("TINYTHINKER_SHIPPED_DIR", str(tmp_path))
    with pytest.raises(ReflectError, match="answer-only: the shipped answer-only baseline .stage type summarize"):
        _shipped_phase1("answer-only")
    assert _shipped_phase1("p1").config["stage_type"] == "recall_analyze_summarize"


def test_step_through_starts_on_the_best_shipped_phase1_student(tmp_path):
    from test_app import make_workspace

    from demo.context import AppContext

    ctx = AppContext(ws=make_workspace(tmp_path / "ws", None, traces=False, runs=False))
    best = max((m for m in SHIPPED if m.role == "phase1"), key=lambda m: m.val_acc)
    assert ctx.default_checkpoint() == best.name == "tinythinker-smollm2-p1-equal"


def _ship_module():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("ship", Path(__file__).resolve().parent.parent / "bench" / "ship.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_retrace_extends_cached_traces_and_updates_the_card(tmp_path):
    import json

    from tinythinker.pipeline import write_traces
    from tinythinker.types import Option, Question, Trace

    def trace(i: int, right: bool) -> Trace:
        q = Question(id=f"q{i}", stem=f"stem {i}?", options=[Option("A", "a"), Option("B", "b")], answer="A")
        return Trace(question=q, recall="r", analyses={"A": "x", "B": "y"}, summary="So the answer is option A.",
                     predicted="A" if right else "B", correct=right, model="m")

    folder = tmp_path / "m"
    cached = [trace(0, True), trace(1, False)]
    write_traces(folder / "traces" / "validation.jsonl", cached)
    (folder / "shipped.json").write_text(json.dumps({"name": "m", "val_acc": 0.5, "val_questions": 2}))
    (folder / "model_card.md").write_text("# m\n\n- **Validation accuracy**: 50.0% on the first 2 CSQA validation "
                                          "questions (invalid answers 0.0%).\n- **Date**: 2026-12-02\n")
    ship = _ship_module()

    changed = tmp_path / "changed.jsonl"
    write_traces(changed, [trace(0, False), trace(1, False), trace(2, True)])
    with pytest.raises(SystemExit, match=r"changed.jsonl, line 1: differs"):
        ship.retrace(folder, changed)
    shorter = tmp_path / "short.jsonl"
    write_traces(shorter, cached[:1])
    with pytest.raises(SystemExit, match="fewer than the 2 cached"):
        ship.retrace(folder, shorter)
    assert len(read_traces(folder / "traces" / "validation.jsonl")) == 2  # refused: nothing changed

    longer = tmp_path / "longer.jsonl"
    write_traces(longer, [*cached, trace(2, True), trace(3, True)])
    shipped = ship.retrace(folder, longer)
    assert shipped["val_acc"] == 0.75 and shipped["val_questions"] == 4 and shipped["name"] == "m"
    assert json.loads((folder / "shipped.json").read_text())["val_questions"] == 4
    card = (folder / "model_card.md").read_text()
    assert "75.0% on the first 4 CSQA validation questions" in card and "- **Date**: 2026-12-02" in card
    assert len(read_traces(folder / "traces" / "validation.jsonl")) == 4
