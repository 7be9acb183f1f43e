"""Several annotators (kappa, disagreements, overlap), the stored guideline, and pairwise labelling."""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest
from store_helpers import question, trace

from tinythinker import stages
from tinythinker.store import Store, StoreError, agreement, guideline, pairwise, settings


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "tt.db") as s:
        yield s


# ---- kappa by hand ---------------------------------------------------------------------------------------------


def test_cohen_kappa_by_hand():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15.
    # p_o = 0.7; A says yes 25/50, B 30/50: p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.2 / 0.5 = 0.4
    ratings = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert agreement.cohen_kappa(ratings) == pytest.approx(0.4)
    assert agreement.cohen_kappa([("a", "a"), ("b", "b")]) == pytest.approx(1.0)
    assert agreement.cohen_kappa([("a", "a")] * 3) is None  # chance agreement 1: undefined
    assert agreement.cohen_kappa([]) is None


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) / Wikipedia: 10 subjects, 14 raters, 5 categories -> kappa = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [Counter({c: n for c, n in enumerate(row) if n}) for row in table]
    assert agreement.fleiss_kappa(items) == pytest.approx(0.2099, abs=1e-4)
    # Two raters on every item: Fleiss' kappa (Scott's pi) on a perfect agreement is 1
    assert agreement.fleiss_kappa([["a", "a"], ["b", "b"], ["a", "a"]]) == pytest.approx(1.0)
    assert agreement.fleiss_kappa([["a"]]) is None  # one rating per item: nothing to agree on


def _three_traces(s):
    q = question("q1")
    return s.import_traces([trace(q=q, tag=" one"), trace(q=q, tag=" two", predicted="B"),
                            trace(q=q, tag=" three", predicted="C")], model="m")


def test_agreement_by_stage_and_disagreements(store):
    _three_traces(store)
    for tid, ana, bob in ((1, "good", "good"), (2, "bad", "bad"), (3, "good", "bad")):
        store.label(tid, "recall", ana, annotator="ana")
        store.label(tid, "recall", bob, annotator="bob")
    store.label(1, "summarize", "good", annotator="ana")  # one annotator only: no agreement item
    store.label(2, "recall", "good", annotator="bob")  # bob changes his mind: latest counts
    store.label(2, "recall", "bad", annotator="bob")
    rows = {r["stage"]: r for r in agreement.agreement_by_stage(store)}
    # ana: g b g, bob: g b b -> p_o = 2/3; ana good 2/3, bob good 1/3: p_e = 2/9 + 2/9 = 4/9; kappa = (2/9)/(5/9)
    assert rows["recall"]["method"] == "cohen" and rows["recall"]["items"] == 3
    assert rows["recall"]["kappa"] == pytest.approx(0.4) and rows["recall"]["agreement"] == pytest.approx(2 / 3)
    assert rows["summarize"]["items"] == 0 and rows["summarize"]["kappa"] is None
    dis = agreement.disagreements(store)
    assert [(d["trace_id"], d["stage"], d["summary"]) for d in dis] == [(3, "recall", "ana: good, bob: bad")]
    # A third annotator: Fleiss, plus Cohen of every pair.
    store.label(3, "recall", "bad", annotator="cy")
    rec = {r["stage"]: r for r in agreement.agreement_by_stage(store)}["recall"]
    assert rec["method"] == "fleiss" and rec["annotators"] == ["ana", "bob", "cy"] and len(rec["pairwise"]) == 3
    # Undoing a label takes it out of the agreement.
    store.undo_last("cy")
    assert {r["stage"]: r for r in agreement.agreement_by_stage(store)}["recall"]["method"] == "cohen"


def test_overlap_keeps_an_item_until_enough_annotators_labelled_it(store):
    _three_traces(store)
    assert settings.get_overlap(store) == 1
    assert settings.set_overlap(store, 2, by="lead") == 2 and settings.get_overlap(store) == 2
    with pytest.raises(StoreError, match="overlap"):
        settings.set_overlap(store, 0)
    store.label(1, "recall", "good", annotator="ana")
    # overlap 1: trace 1 has left the queue for everyone
    assert store.next_unlabelled(annotator="bob").id == 2
    # overlap 2: bob still gets trace 1, ana (who labelled it) does not
    assert store.next_unlabelled(annotator="bob", overlap=2).id == 1
    assert store.next_unlabelled(annotator="ana", overlap=2).id == 2
    store.label(1, "recall", "bad", annotator="bob")
    assert store.next_unlabelled(annotator="cy", overlap=2).id == 2  # two annotators: done
    assert store.next_unlabelled(annotator="cy", overlap=3).id == 1
    with pytest.raises(StoreError, match="annotator"):
        store.next_unlabelled(overlap=2)


def test_guideline_is_stored_and_versioned(store):
    g = guideline.guideline(store)
    assert g["version"] == 0 and "good" in g["text"]
    v1 = guideline.set_guideline(store, "Be strict about facts.", "lead")
    assert v1["text"] == "Be strict about facts." and v1["author"] == "lead" and v1["version"] >= 1
    assert guideline.set_guideline(store, "Be strict about facts.", "lead")["version"] == v1["version"]  # no-op
    guideline.set_guideline(store, "Be strict.\nAnd kind.", "ana")
    assert guideline.guideline(store)["text"] == "Be strict.\nAnd kind."
    assert [h["author"] for h in guideline.guideline_history(store)] == ["lead", "ana"]
    with pytest.raises(StoreError):
        guideline.set_guideline(store, "   ", "lead")
    with pytest.raises(StoreError, match="author"):
        guideline.set_guideline(store, "x", "")


# ---- pairwise --------------------------------------------------------------------------------------------------


def _samples(s):
    """Three sampled traces of model m on q1 (two distinct recalls: one and three are the same text), one of
    model n on q1, and one of m on q2."""
    q1, q2 = question("q1"), question("q2", stem="Where do fish live?", answer="B")
    one = trace(q=q1, tag=" one")
    one.sampling = {"recall": {"do_sample": True, "temperature": 0.7}, "sample_index": 0}
    two = trace(q=q1, tag=" two", predicted="B")
    two.sampling = {"recall": {"do_sample": True, "temperature": 0.7}, "sample_index": 1}
    three = trace(q=q1, tag=" one", predicted="C")
    three.model = "runs/m/checkpoint-40"
    s.import_traces([one, two, three], model="m", iteration=1)
    s.import_traces([trace(q=q1, tag=" other")], model="n", iteration=0)
    s.import_traces([trace(q=q2, tag=" alone")], model="m", iteration=1)


def test_pairwise_queue_offers_each_text_pair_once(store):
    _samples(store)
    items = list(pairwise.candidates(store, "m", stage="recall"))
    # traces 1, 2, 3 of m on q1: recall texts one / two / one -> one distinct pair; q2 has a single trace
    assert len(items) == 1 and {items[0].first.id, items[0].second.id} == {1, 2}
    assert items[0].prompt == stages.recall_input(question("q1"))
    # Analyze: same recall needed (the prompt includes it): traces 1 and 3 share recall "one"
    analyze = list(pairwise.candidates(store, "m", stage="analyze"))
    assert {(i.first.id, i.second.id) for i in analyze} == set()  # their analyses are identical texts
    # Two models: m vs n on q1
    two = list(pairwise.candidates(store, "m", "n", stage="recall"))
    assert len(two) == 2 and all(4 in (i.first.id, i.second.id) for i in two)
    # model@iteration picks an iteration
    assert list(pairwise.candidates(store, "m@0", stage="recall")) == []


def test_pairwise_choice_becomes_a_curated_pair_with_provenance(store):
    _samples(store)
    item = pairwise.next_pair(store, "ana", "m", "n", stage="recall")
    better = item.first if item.first.id == 4 else item.second  # ana prefers model n's recall
    choice = pairwise.FIRST if better is item.first else pairwise.SECOND
    pairwise.choose(store, item.first.id, item.second.id, "recall", choice, "ana")
    nxt = pairwise.next_pair(store, "ana", "m", "n", stage="recall")
    assert nxt is not None and nxt.key() != item.key()
    pairs = [p for p in store.curated_pairs() if p.provenance.get("kind") == "pairwise"]
    assert len(pairs) == 1
    p = pairs[0]
    other = item.second if better is item.first else item.first
    assert p.chosen == better.trace.recall and p.rejected == other.trace.recall and p.source == "curated"
    assert p.prompt == stages.recall_input(question("q1")) and p.iteration == other.iteration
    assert p.provenance["chosen"]["model"] == "n" and p.provenance["chosen"]["iteration"] == 0
    assert p.provenance["rejected"]["model"] == "m" and p.provenance["rejected"]["iteration"] == 1
    assert "sampling" in p.provenance["rejected"] and p.provenance["annotators"] == ["ana"]
    # A tie and a skip make no pair; bob preferring the other side cancels ana's pair.
    pairwise.choose(store, nxt.first.id, nxt.second.id, "recall", pairwise.TIE, "ana")
    assert pairwise.next_pair(store, "ana", "m", "n") is None
    flip = pairwise.SECOND if choice == pairwise.FIRST else pairwise.FIRST
    pairwise.choose(store, item.first.id, item.second.id, "recall", flip, "bob")
    assert not [p for p in store.curated_pairs() if p.provenance.get("kind") == "pairwise"]
    agree = pairwise.pairwise_agreement(store)
    assert agree["choices"]["tie"] == 1 and agree["shared_items"] == 1 and agree["method"] == "cohen"
    # bob changes his mind: the latest choice counts, and the pair is back
    pairwise.choose(store, item.first.id, item.second.id, "recall", choice, "bob")
    back = [p for p in store.curated_pairs() if p.provenance.get("kind") == "pairwise"]
    assert len(back) == 1 and back[0].provenance["annotators"] == ["ana", "bob"]


def test_pairwise_choice_checks_its_input(store):
    _samples(store)
    with pytest.raises(StoreError, match="unknown choice"):
        pairwise.choose(store, 1, 2, "recall", "x", "ana")
    with pytest.raises(StoreError, match="different questions"):
        pairwise.choose(store, 1, 5, "recall", "1", "ana")
    with pytest.raises(StoreError, match="no two different"):
        pairwise.choose(store, 1, 3, "recall", "1", "ana")  # the same recall text
    with pytest.raises(StoreError, match="annotator"):
        pairwise.choose(store, 1, 2, "recall", "1", " ")
    pairwise.choose(store, 1, 2, "recall", "s", "ana")
    with pytest.raises(sqlite3.IntegrityError, match="history"):
        store.db.execute("DELETE FROM pair_choices")
    # a skip leaves the item out of ana's queue only, and makes no pair
    assert pairwise.next_pair(store, "ana", "m") is None
    assert pairwise.next_pair(store, "bob", "m") is not None
    assert not [p for p in store.curated_pairs() if p.provenance.get("kind") == "pairwise"]


def test_pairwise_overlap(store):
    _samples(store)
    settings.set_overlap(store, 1)
    item = pairwise.next_pair(store, "ana", "m")
    pairwise.choose(store, item.first.id, item.second.id, "recall", "1", "ana")
    assert pairwise.next_pair(store, "bob", "m") is None  # one decision is enough
    assert pairwise.next_pair(store, "bob", "m", overlap=2) is not None
