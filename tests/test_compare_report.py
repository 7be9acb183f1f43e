"""The split-level comparison report: Wilson intervals, exact McNemar, slices and table filters (no model)."""

import math

import pytest

from tinythinker import compare
from tinythinker.types import Option, Question, Trace


def _q(qid, answer="A", stem="Where do people keep money?", concept=None):
    meta = {"question_concept": concept} if concept else {}
    return Question(qid, stem, [Option("A", "bank"), Option("B", "river bed"), Option("C", "shoe")], answer,
                    meta=meta)


def _t(q, predicted, recall="", summary=""):
    return Trace(q, recall, {"A": f"about {q.option_text('A')}"}, summary or f"So the answer is option {predicted}.",
                 predicted, None if q.answer is None else predicted == q.answer)


def test_mcnemar_exact_values_by_hand():
    # b=10, c=2: n=12, P(X<=2) = (1 + 12 + 66) / 4096 = 79/4096, two-sided 158/4096 = 0.03857
    assert compare.mcnemar(10, 2)["p_value"] == pytest.approx(158 / 4096)
    assert round(compare.mcnemar(10, 2)["p_value"], 4) == 0.0386
    assert compare.mcnemar(2, 10)["p_value"] == compare.mcnemar(10, 2)["p_value"]  # symmetric
    # b=5, c=0: 2 * (1/32) = 0.0625; no discordant pairs: p = 1; equal counts cap at 1
    assert compare.mcnemar(5, 0)["p_value"] == pytest.approx(0.0625)
    assert compare.mcnemar(0, 0)["p_value"] == 1.0
    assert compare.mcnemar(3, 3)["p_value"] == 1.0
    # b=1, c=6: n=7, P(X<=1) = 8/128, two-sided 0.125
    assert compare.mcnemar(1, 6)["p_value"] == pytest.approx(0.125)
    # Large n stays exact (integers) and finite.
    p = compare.binomial_two_sided(400, 1000)
    assert 0 < p < 1e-9 and math.isfinite(p)


def test_wilson_interval_by_hand():
    # 8 of 10: centre (0.8 + 1.92/10) / 1.384, half-width 1.96 * sqrt(0.016 + 0.0096) / 1.384
    lo, hi = compare.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert compare.wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = compare.wilson_interval(0, 20)
    assert lo == 0.0 and 0.1 < hi < 0.2
    acc = compare.accuracy([_t(_q("1"), "A"), _t(_q("2"), "B")])
    assert acc["n"] == 2 and acc["correct"] == 1 and acc["accuracy"] == 0.5 and acc["ci_low"] < 0.5 < acc["ci_high"]


def test_report_counts_flips_and_mcnemar_over_shared_questions():
    # 10 right->wrong, 2 wrong->right, 3 both right, 1 both wrong, and one question only A answered.
    a, b = [], []
    for i in range(10):
        q = _q(f"rw{i}")
        a.append(_t(q, "A")); b.append(_t(q, "B"))  # noqa: E702
    for i in range(2):
        q = _q(f"wr{i}")
        a.append(_t(q, "C")); b.append(_t(q, "A"))  # noqa: E702
    for i in range(3):
        q = _q(f"rr{i}")
        a.append(_t(q, "A")); b.append(_t(q, "A"))  # noqa: E702
    q = _q("ww")
    a.append(_t(q, "B")); b.append(_t(q, "C"))  # noqa: E702
    a.append(_t(_q("only-a"), "A"))
    r = compare.compare_report(a, b)
    assert r["n"] == 16 and r["only_a"] == 1 and r["only_b"] == 0
    assert r["flips"] == {"both right": 3, "right->wrong": 10, "wrong->right": 2, "both wrong": 1}
    assert r["mcnemar"]["p_value"] == pytest.approx(158 / 4096)
    assert r["a"]["correct"] == 13 and r["b"]["correct"] == 5 and r["a"]["n"] == 16
    text = compare.report_markdown(r, "p1", "p2")
    assert "16 questions" in text and "p = 0.03857" in text and "significant difference (p < 0.05)" in text


def test_slices_concept_letter_length_and_recall_naming():
    long_stem = "word " * 25
    qa = _q("1", "A", concept="money")
    qb = _q("2", "B", concept="money")
    qc = _q("3", "A", stem=long_stem)
    a = [_t(qa, "A", recall="Banks keep money."), _t(qb, "A", recall="A shoe is worn."), _t(qc, "A", recall=None)]
    b = [_t(qa, "B", recall="Rivers flow."), _t(qb, "B", recall="The river beds are wet."), _t(qc, "A")]
    rows = compare.compare_report(a, b)["slices"]
    by = {(r["slice"], r["value"]): r for r in rows}
    assert by[("concept", "money")]["n"] == 2 and ("concept", "None") not in by  # no concept: left out
    assert by[("concept", "money")]["right->wrong"] == 1 and by[("concept", "money")]["wrong->right"] == 1
    assert by[("gold letter", "A")]["n"] == 2 and by[("gold letter", "B")]["n"] == 1
    assert by[("question length", ">20 words")]["n"] == 1 and by[("question length", "<=10 words")]["n"] == 2
    # A's recall names the gold option on q1 ("banks" ~ "bank"), not on q2 (gold "river bed"); q3 has none.
    assert by[("A's recall names the gold option", "yes")]["n"] == 1
    assert by[("A's recall names the gold option", "no")]["n"] == 1
    assert by[("A's recall names the gold option", "no recall")]["n"] == 1
    # B's recall on q2 names every word of "river bed" (plural folded); on q1 it names no option.
    assert by[("B's recall names the gold option", "yes")]["n"] == 1
    assert by[("A's recall names another option", "yes")]["n"] == 1  # q2: "shoe"
    row = by[("gold letter", "A")]
    assert row["acc_a"] == 1.0 and row["acc_b"] == 0.5 and row["right->wrong rate"] == 0.5
    assert compare.names_option("the bank is by the river", "river bed") is False
    assert compare.names_option("anything", "") is False


def test_table_filters_and_text_search():
    q1, q2, q3, q4 = _q("1"), _q("2"), _q("3"), _q("4")
    a = [_t(q1, "A"), _t(q2, "B"), _t(q3, "B", recall="Think of a zebra."), _t(q4, "A")]
    b = [_t(q1, "B"), _t(q2, "C"), _t(q3, "B"), _t(q4, "A")]
    ids = lambda show, search="": [r["id"] for r in compare.compare_rows(a, b, show, search)]  # noqa: E731
    assert ids(compare.SHOW_ALL) == ["1", "2", "3", "4"]
    assert ids(compare.SHOW_FLIPS) == ["1"]
    assert ids(compare.SHOW_BOTH_WRONG_DIFFERENT) == ["2"]
    assert ids(compare.SHOW_SAME) == ["3", "4"]
    assert ids(compare.SHOW_ALL, "ZEBRA") == ["3"]  # a stage text, any case
    assert ids(compare.SHOW_ALL, "river money") == ["1", "2", "3", "4"]  # options and stem, every word
    assert ids(compare.SHOW_SAME, "zebra") == ["3"]
    assert compare.compare_rows(a, b)[3]["kind"] == "both right"
    with pytest.raises(ValueError, match="unknown filter"):
        compare.compare_rows(a, b, "nope")


def test_largest_differences_orders_by_gap():
    rows = [{"n": 10, "acc_a": 0.5, "acc_b": 0.9, "p_value": 0.1}, {"n": 10, "acc_a": 0.5, "acc_b": 0.4,
                                                                    "p_value": 0.5},
            {"n": 2, "acc_a": 0.0, "acc_b": 1.0, "p_value": 0.5}]
    assert compare.largest_differences(rows, min_n=5) == rows[:2]


def test_compared_traces_download_reads_back_as_traces(tmp_path):
    import json

    a, b = [_t(_q("1"), "A")], [_t(_q("1"), "B")]
    path = compare.write_compared_traces(tmp_path / "d" / "traces.jsonl", a, b, "runs/p1/best", "runs/p2/best")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(x["compare"]["side"], x["model"]) for x in lines] == [("A", "runs/p1/best"), ("B", "runs/p2/best")]
    assert Trace.from_dict(lines[1]).predicted == "B"


def test_plots_of_slices_agreement_and_pair_checks():
    from tinythinker import plots

    a = [_t(_q("1", "A"), "A"), _t(_q("2", "B"), "B"), _t(_q("3", "B"), "C")]
    b = [_t(_q("1", "A"), "B"), _t(_q("2", "B"), "B"), _t(_q("3", "B"), "B")]
    rows = compare.compare_report(a, b)["slices"]
    fig = plots.flip_rates_by_slice(rows, "gold letter")
    assert [t.name for t in fig.data] == ["right->wrong", "wrong->right"]
    assert list(fig.data[0].x) == ["B", "A"] and list(fig.data[0].y) == [0.0, 1.0]
    assert list(fig.data[1].y) == [0.5, 0.0]
    assert len(plots.flip_rates_by_slice(rows).data[0].x) == len(rows)  # every slice
    assert list(plots.flip_rates_by_slice(rows, "gold letter", max_bars=1).data[0].x) == ["B"]  # the largest
    assert not plots.flip_rates_by_slice([], "concept").data  # an empty chart says so
    kappa = plots.agreement_by_stage([{"stage": "recall", "kappa": 0.4, "method": "cohen", "items": 3},
                                      {"stage": "analyze", "kappa": None, "method": None, "items": 0}])
    assert list(kappa.data[0].x) == ["recall"]
    checks = plots.pair_checks([{"check": "duplicates", "value": 0.2, "threshold": "<= 0.1", "ok": False},
                                {"check": "letters", "value": None, "threshold": "", "ok": True}])
    assert list(checks.data[0].y) == ["duplicates"] and checks.data[0].marker.color == ("#e53935",)
