import pytest

from tinythinker import stages
from tinythinker.pairs import (
    AUTO,
    CURATED,
    TEACHER,
    AnalyzeContext,
    Pair,
    PairError,
    analyze_pairs,
    pair_stats,
    recall_pairs,
)
from tinythinker.types import Option, Question, Rationale, Trace


def question(qid="q1", answer="A"):
    return Question(qid, f"stem of {qid}?", [Option("A", "apple"), Option("B", "bear"), Option("C", "cat")], answer)


def trace(q, recall, predicted, analyses=None):
    return Trace(q, recall, dict(analyses or {}), f"So the answer is option {predicted}.", predicted,
                 None if q.answer is None else predicted == q.answer)


def test_recall_pairs_chosen_vs_rejected_with_duplicates_and_common_texts_dropped():
    q = question()
    traces = [
        trace(q, "good one", "A"), trace(q, "good one", "A"),  # duplicate chosen
        trace(q, "good two", "A"),
        trace(q, "both sides", "A"), trace(q, "both sides", "B"),  # on both sides -> dropped
        trace(q, "bad one", "B"),
        trace(q, "bad two", None),  # an invalid answer is a rejected recall, as in the paper
        trace(q, "", "C"), trace(q, "  ", "C"),  # empty recalls are no text to pair
    ]
    pairs, contexts = recall_pairs(traces, seed=0)
    assert len(pairs) == 2
    assert {p.chosen for p in pairs} == {"good one", "good two"}
    assert {p.rejected for p in pairs} <= {"bad one", "bad two"}
    assert all(p.prompt == stages.recall_input(q) and p.stage == stages.RECALL for p in pairs)
    assert all(p.source == AUTO for p in pairs)
    assert "both sides" not in {p.chosen for p in pairs} | {p.rejected for p in pairs}
    assert all(p.rejected.strip() for p in pairs)
    assert sorted(c.recall for c in contexts) == ["good one", "good two"]


def test_recall_pairs_skip_questions_without_a_rejected_recall():
    q1, q2 = question("q1"), question("q2")
    traces = [trace(q1, "r1", "A"), trace(q1, "r2", "A"),
              trace(q2, "same", "A"), trace(q2, "same", "C")]  # q2: the only rejected text is also chosen
    pairs, contexts = recall_pairs(traces)
    assert pairs == [] and contexts == []


def test_recall_pairs_more_chosen_resamples_rejected():
    q = question()
    traces = [trace(q, f"good {i}", "A") for i in range(4)] + [trace(q, "bad", "C")]
    pairs, _ = recall_pairs(traces, seed=3)
    assert len(pairs) == 4
    assert sorted(p.chosen for p in pairs) == [f"good {i}" for i in range(4)]
    assert {p.rejected for p in pairs} == {"bad"}


def test_recall_pairs_more_rejected_adds_teacher_recalls_seeded():
    q = question()
    traces = [trace(q, "good", "A", {"A": "fine"})] + [trace(q, f"bad {i}", "B") for i in range(3)]
    teacher = {"q1": [Rationale("teacher 1", {"A": "ta"}), Rationale("teacher 2", {"A": "tb"}),
                      Rationale("bad 0", {"A": "same text as a rejected recall"})]}
    pairs, contexts = recall_pairs(traces, teacher, seed=1)
    assert len(pairs) == 3
    assert sorted(p.rejected for p in pairs) == ["bad 0", "bad 1", "bad 2"]
    chosen = sorted((p.chosen, p.source) for p in pairs)
    assert chosen == [("good", AUTO), ("teacher 1", TEACHER), ("teacher 2", TEACHER)]
    backups = {c.recall: c.backup for c in contexts}
    assert backups["good"] == [({"A": "fine"}, AUTO)]
    assert backups["teacher 1"] == [({"A": "ta"}, TEACHER)]
    # seeded: the same seed builds the same pairs
    again, _ = recall_pairs(traces, teacher, seed=1)
    assert [p.to_dict() for p in again] == [p.to_dict() for p in pairs]


def test_recall_pairs_without_teacher_pair_only_as_many_as_chosen():
    q = question()
    traces = [trace(q, "good", "A")] + [trace(q, f"bad {i}", "B") for i in range(3)]
    pairs, _ = recall_pairs(traces, {}, seed=0)
    assert len(pairs) == 1 and pairs[0].chosen == "good"


def test_recall_pairs_skip_questions_without_answer():
    q = question(answer=None)
    pairs, _ = recall_pairs([trace(q, "x", "A"), trace(q, "y", "B")])
    assert pairs == []


def analyses(a, b, c):
    return {"A": a, "B": b, "C": c}


def test_analyze_pairs_only_gt_and_predicted_option():
    q = question()
    ctx = AnalyzeContext(q, "the recall", [(analyses("ta", "tb", "tc"), TEACHER)])
    traces = [
        trace(q, "the recall", "A", analyses("a good", "b good", "c good")),
        trace(q, "the recall", "B", analyses("a bad", "b bad", "c bad")),
    ]
    pairs = analyze_pairs(traces, [ctx], seed=0)
    assert [(p.chosen, p.rejected) for p in pairs] == [("a good", "a bad"), ("b good", "b bad")]
    assert pairs[0].prompt == stages.analyze_input(q, "the recall", "A")
    assert pairs[1].prompt == stages.analyze_input(q, "the recall", "B")
    assert all(p.stage == stages.ANALYZE and p.source == AUTO for p in pairs)
    assert [p.provenance["option"] for p in pairs] == ["A", "B"]


def test_analyze_pairs_use_backup_when_no_trace_is_right():
    q = question()
    ctx = AnalyzeContext(q, "r", [(analyses("ta", "tb", "tc"), TEACHER)])
    traces = [trace(q, "r", "C", analyses("a1", "b1", "c1")), trace(q, "r", "B", analyses("a2", "b2", "c2"))]
    pairs = analyze_pairs(traces, [ctx], seed=0)
    got = sorted((p.provenance["option"], p.chosen, p.rejected, p.source) for p in pairs)
    assert got == [("A", "ta", "a1", TEACHER), ("A", "ta", "a2", TEACHER),
                   ("B", "tb", "b2", TEACHER), ("C", "tc", "c1", TEACHER)]


def test_analyze_pairs_drop_invalid_identical_and_common():
    q = question()
    same = analyses("x", "y", "z")
    traces = [
        trace(q, "r", "A", same), trace(q, "r", "B", same),  # the same analyses on both sides: dropped
        trace(q, "r", None, analyses("n1", "n2", "n3")),  # invalid answer: dropped
    ]
    assert analyze_pairs(traces, [AnalyzeContext(q, "r", [])]) == []
    # an option whose text is the same on both sides gives no pair, the other option still does
    traces = [trace(q, "r", "A", analyses("same", "b good", "c")), trace(q, "r", "B", analyses("same", "b bad", "c"))]
    pairs = analyze_pairs(traces, [AnalyzeContext(q, "r", [])])
    assert [(p.chosen, p.rejected) for p in pairs] == [("b good", "b bad")]


def test_analyze_pairs_balance_more_rejected_than_chosen():
    q = question()
    traces = [trace(q, "r", "A", analyses("g", "gb", "gc"))] + [
        trace(q, "r", "C", analyses(f"a{i}", f"b{i}", f"c{i}")) for i in range(3)]
    pairs = analyze_pairs(traces, [AnalyzeContext(q, "r", [])], seed=0)
    # every rejected trace is paired with the (resampled) chosen one, on the GT and the predicted option
    assert len(pairs) == 6
    assert {p.chosen for p in pairs} == {"g", "gc"}


def test_pair_round_trip_and_stats():
    p = Pair("prompt", "c", "r", stages.RECALL, "q1", AUTO, provenance={"gt": "A"})
    assert Pair.from_dict(p.to_dict()) == p
    q1, q2, q3 = question("q1"), question("q2"), question("q3")
    traces = [trace(q1, "a", "A"), trace(q1, "b", "A"), trace(q2, "a", "B"), trace(q3, "a", "A"),
              trace(q3, "b", "C")]
    assert pair_stats(traces) == {"questions": 3, "all_right": 1, "all_wrong": 1, "mixed": 1}


def test_one_pair_type_reads_its_own_dicts_and_older_ones():
    import tinythinker.store.pairs as store_pairs
    from tinythinker.store import Pair as StorePair
    from tinythinker.store import StoreError

    # Phase 2 and the store share the one type and its source names.
    assert store_pairs.Pair is StorePair is Pair
    assert (store_pairs.SOURCES_AUTO, store_pairs.SOURCES_CURATED) == (AUTO, CURATED)
    p = Pair("P\nRecall:", "c", "r", stages.RECALL, "q1", CURATED, iteration=2, provenance={"chosen": {"trace_id": 1}})
    assert Pair.from_dict(p.to_dict()) == p
    # Files from earlier versions keep provenance in `meta` (a curated pair's nested as meta={"provenance": ...}).
    old = {k: v for k, v in p.to_dict().items() if k != "provenance"}
    assert Pair.from_dict({**old, "meta": {"gt": "A"}}).provenance == {"gt": "A"}
    assert Pair.from_dict({**old, "meta": {"provenance": {"chosen": {"trace_id": 1}}}}) == p
    # A record missing a field names it and where the record came from; the store raises its own error type.
    bad = {k: v for k, v in p.to_dict().items() if k != "chosen"}
    with pytest.raises(PairError, match=r"^pairs\.jsonl line 3: missing field 'chosen'$"):
        Pair.from_dict(bad, where="pairs.jsonl line 3")
    with pytest.raises(StoreError, match=r"^pairs\.jsonl line 3: missing field 'chosen'$"):
        store_pairs.read_pair(bad, "pairs.jsonl line 3")
    with pytest.raises(PairError, match="row 0: field 'provenance' must be an object"):
        Pair.from_dict({**p.to_dict(), "provenance": "[1]"}, where="row 0")
