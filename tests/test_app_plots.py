"""Figures from real-format run records: what each chart draws."""

from tinythinker import plots
from tinythinker.compare import disagreements, flip_counts, word_diff
from tinythinker.types import Option, Question, Trace


def test_training_curves_phase1_and_phase2():
    p1 = [{"kind": "train", "step": s, "loss": 3.0 / s, "stage": st} for s, st in
          ((1, "recall"), (2, "analyze"), (3, "summarize"), (4, "recall"))]
    p1 += [{"kind": "eval", "step": 4, "accuracy": 0.3}, {"kind": "end", "step": 4}]
    fig = plots.training_curves(p1)
    names = {t.name for t in fig.data}
    assert names == {"loss recall", "loss analyze", "loss summarize", "val accuracy"}
    assert list(next(t for t in fig.data if t.name == "loss recall").x) == [1, 4]
    p2 = [{"kind": "baseline", "iteration": 0, "step": 0, "accuracy": 0.30},
          {"kind": "dpo", "iteration": 1, "step": 5, "dpo_loss": 0.69, "nll_loss": 2.0, "rewards/margins": 0.1},
          {"kind": "eval", "iteration": 1, "step": 5, "accuracy": 0.32},
          {"kind": "iteration", "iteration": 1, "step": 5, "val_acc": 0.32, "pairs": 10},
          {"kind": "iteration", "iteration": 2, "step": 10, "val_acc": 0.35, "pairs": 8}]
    assert {"dpo_loss", "nll_loss", "reward margins"} <= {t.name for t in plots.training_curves(p2).data}
    it = plots.accuracy_by_iteration(p2).data[0]
    assert list(it.x) == [0, 1, 2] and list(it.y) == [0.30, 0.32, 0.35]
    assert not plots.accuracy_by_iteration([]).data  # an empty chart says so instead of drawing nothing


def test_stage_type_and_flip_charts():
    runs = [{"name": "a", "stage_type": "summarize", "best_accuracy": 0.2},
            {"name": "b", "stage_type": "recall_analyze_summarize", "best_accuracy": 0.3},
            {"name": "c", "stage_type": "summarize", "best_accuracy": None}]
    fig = plots.accuracy_by_stage_type(runs)
    assert sorted(t.name for t in fig.data) == ["recall_analyze_summarize", "summarize"]
    bars = plots.flips({"both right": 3, "right->wrong": 1, "wrong->right": 2, "both wrong": 0}).data[0]
    assert list(bars.y) == [3, 1, 2, 0]


def _trace(qid, predicted, answer="A"):
    q = Question(qid, "stem", [Option("A", "x"), Option("B", "y")], answer)
    return Trace(q, "r", {}, f"So the answer is option {predicted}.", predicted, predicted == answer)


def test_disagreements_and_word_diff():
    a = [_trace("1", "A"), _trace("2", "B"), _trace("3", "A"), _trace("4", "B"), _trace("5", None)]
    b = [_trace("1", "B"), _trace("2", "A"), _trace("3", "A"), _trace("4", "B"), _trace("5", "B")]
    rows = disagreements(a, b)
    assert [(r["id"], r["kind"]) for r in rows] == [("1", "right->wrong"), ("2", "wrong->right"),
                                                      ("4", "both wrong"), ("5", "both wrong")]
    assert rows[3]["a"] == "invalid" and not rows[3]["same answer"] and rows[2]["same answer"]
    assert [r["id"] for r in disagreements(a, b, kinds=("wrong->right",))] == ["2"]
    assert flip_counts(a, b) == {"both right": 1, "right->wrong": 1, "wrong->right": 1, "both wrong": 2}
    left, right = word_diff("the cat sat on the mat", "the dog sat on the mat")
    assert ("cat ", "-") in left and ("dog ", "+") in right
    assert "".join(t for t, _ in left).split() == "the cat sat on the mat".split()


def test_verdict_and_notes_draw_in_any_font():
    from demo.widgets import UNTRAINED_NOTE, question_markdown, verdict_markdown

    q = Question("q", "Where?", [Option("A", "oven"), Option("B", "park")], "B", "test")
    wrong = Trace(question=q, recall=None, analyses={}, summary="So the answer is option A.", predicted="A",
                  correct=False)
    text = verdict_markdown(wrong) + UNTRAINED_NOTE + question_markdown(q)
    assert "wrong (answer B)" in text
    # no emoji or dingbats: Debian's Chromium has no font for them (an empty box where the verdict should be)
    assert not [c for c in text if ord(c) >= 0x2190]
