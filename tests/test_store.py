"""The annotation store: schema, import, queue, labels and undo, curated and stored pairs, export round trips, CLI."""

from __future__ import annotations

import json
import sqlite3

import pytest
from store_helpers import counts, question, trace, write_jsonl

from tinythinker import stages
from tinythinker.cli import main
from tinythinker.store import SCHEMA_VERSION, Pair, Store, StoreError, resolve_db_path
from tinythinker.types import Trace


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "tt.db") as s:
        yield s


# ---- schema ------------------------------------------------------------------------------------------------------


def test_schema_created_with_version_wal_and_busy_timeout(tmp_path):
    path = tmp_path / "new" / "tt.db"
    with Store(path, busy_timeout=7) as s:
        assert {"questions", "models", "traces", "labels", "undos", "skips", "pairs"} <= set(s.db.table_names())
        assert "current_labels" in s.db.view_names()
        assert s.schema_version == SCHEMA_VERSION
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert s.db.journal_mode == "wal"
        assert s.db.execute("PRAGMA busy_timeout").fetchone()[0] == 7000
        assert s.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    # Reopening applies nothing again.
    with Store(path) as s:
        assert s.db.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()[0] == SCHEMA_VERSION


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "tt.db"
    Store(path).close()
    con = sqlite3.connect(path)
    con.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                "VALUES ('tinythinker.store', '0099_future', 'later')")
    con.commit()
    con.close()
    with pytest.raises(RuntimeError, match="0099_future"):
        Store(path)


def test_a_version_1_database_is_migrated_with_its_labels(tmp_path):
    import sqlite_utils

    from tinythinker.store.schema import MIGRATIONS

    path = tmp_path / "v1.db"
    db = sqlite_utils.Database(path)
    MIGRATIONS.apply(db, stop_before="0002_label_counts")
    db["questions"].insert({"id": "q1", "stem": "S?", "options": '[{"label": "A", "text": "a"}, '
                            '{"label": "B", "text": "b"}]', "answer": "A", "source": "", "meta": "{}"})
    db["models"].insert({"id": 1, "name": "m", "created_at": "t"})
    for i in (1, 2, 3):
        db["traces"].insert({"id": i, "question_id": "q1", "model_id": 1, "iteration": 0, "stage_type": "summarize",
                             "analyses": "{}", "summary": "s", "predicted": "A", "correct": 1, "created_at": "t"})
    db["labels"].insert_all([{"id": k, "trace_id": t, "stage": "summarize", "verdict": "good", "annotator": "a",
                              "created_at": "t"} for k, t in ((1, 1), (2, 2), (3, 2))])
    db["undos"].insert({"label_id": 1, "annotator": "a", "created_at": "t"})
    db.close()
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION >= 4
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [r[0] for r in s.db.execute("SELECT n_current FROM traces ORDER BY id")] == [0, 2, 0]
        assert s.next_unlabelled().id == 1  # its only label was undone
        s.label(1, "summarize", "bad", annotator="b")
        assert s.next_unlabelled().id == 3


def test_history_cannot_be_changed_even_by_hand(store):
    store.import_traces([trace()], model="m")
    store.label(1, "recall", "good", annotator="ana")
    store.undo_last("ana")
    for sql in ("UPDATE labels SET verdict = 'bad'", "DELETE FROM labels", "DELETE FROM undos",
                "UPDATE undos SET annotator = 'x'"):
        with pytest.raises(sqlite3.IntegrityError, match="history"):
            store.db.execute(sql)
    assert counts(store)["labels"] == 1 and counts(store)["undos"] == 1


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        Store(path)


def test_db_path_from_argument_env_or_default(monkeypatch, tmp_path):
    monkeypatch.delenv("TINYTHINKER_DB", raising=False)
    assert str(resolve_db_path()) == "annotations/tinythinker.db"
    monkeypatch.setenv("TINYTHINKER_DB", str(tmp_path / "env.db"))
    assert resolve_db_path() == tmp_path / "env.db"
    assert resolve_db_path(tmp_path / "arg.db") == tmp_path / "arg.db"


# ---- import ------------------------------------------------------------------------------------------------------


def test_import_round_trips_every_field(store):
    originals = [trace("q1", "A"), trace("q1", "B", tag=" 2"), trace("q2", None, stage_type="summarize")]
    ids = store.import_traces(originals, model="runs/p1", iteration=2)
    assert ids == [1, 2, 3]
    for trace_id, t in zip(ids, originals, strict=True):
        got = store.get_trace(trace_id)
        assert (got.model, got.iteration) == ("runs/p1", 2)
        assert got.trace.to_dict() == {**t.to_dict(), "model": "runs/p1"}
    assert store.models() == ["runs/p1"]
    # The question is stored once however many traces use it.
    assert counts(store)["questions"] == 2


def test_import_takes_the_model_from_the_trace_or_refuses(store):
    [tid] = store.import_traces([trace(model="ckpt/a")])
    assert store.get_trace(tid).model == "ckpt/a"
    before = counts(store)
    with pytest.raises(StoreError, match="no model name"):
        store.import_traces([trace("q9"), trace("q9")])
    assert counts(store) == before


def test_a_changed_question_under_the_same_id_is_refused(store):
    store.import_traces([trace("q1")], model="m")
    before = counts(store)
    changed = trace(q=question("q1", stem="A different stem?"))
    with pytest.raises(StoreError, match="question 'q1' is already stored with a different"):
        store.import_traces([trace("q5"), changed], model="m")
    assert counts(store) == before


def test_import_file_refuses_the_same_file_twice_unless_asked(store, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [trace("q1"), trace("q2")])
    assert store.import_file(path, model="m", iteration=0) == [1, 2]
    with pytest.raises(StoreError, match="2 of its 2 traces are duplicates: 2 are already in the store"):
        store.import_file(path, model="m", iteration=0)
    assert store.import_file(path, model="m", iteration=1) == [3, 4]  # another iteration is another import
    # The old flag now skips them (and counts them): a trace is stored once (see test_store_duplicates.py).
    again = store.import_file(path, model="m", iteration=0, allow_duplicate=True)
    assert again == [] and again.duplicates_in_store == 2 and store.count_traces() == 4


# ---- queue -------------------------------------------------------------------------------------------------------


def _queue_store(store):
    """q1: p1 says A (right), p2 says B (wrong); q2: both say A; q3: p1 says C, p2 says C and A."""
    store.import_traces([trace("q1", "A"), trace("q2", "A"), trace("q3", "C")], model="p1", iteration=0)
    store.import_traces([trace("q1", "B"), trace("q2", "A"), trace("q3", "C"), trace("q3", "A")], model="p2",
                        iteration=1)
    return store


def test_next_serves_lowest_id_and_filters(store):
    s = _queue_store(store)
    assert s.next_unlabelled().id == 1
    assert s.next_unlabelled(model="p2").id == 4
    assert s.next_unlabelled(iteration=1).id == 4
    assert s.next_unlabelled(correct=False).id == 3  # p1 predicted C on q3 (answer A)
    assert s.next_unlabelled(model="p2", correct=False).id == 4
    assert s.next_unlabelled(model="p1", iteration=1) is None
    with pytest.raises(StoreError, match="no model named 'nope'"):
        s.next_unlabelled(model="nope")


def test_next_disagree_between_two_models(store):
    s = _queue_store(store)
    got = []
    while (st := s.next_unlabelled(disagree=("p1", "p2"))) is not None:
        got.append((st.trace.question.id, st.model, st.trace.predicted))
        s.label(st.id, "summarize", "good", annotator="ana")
    # q2 (both A) is left out; q1 and q3 traces of both models come in id order.
    assert got == [("q1", "p1", "A"), ("q3", "p1", "C"), ("q1", "p2", "B"), ("q3", "p2", "C"), ("q3", "p2", "A")]
    # name@iteration picks an iteration; an explicit model keeps only its traces.
    assert s.next_unlabelled(disagree=("p1@0", "p2@1")) is None
    assert s.next_unlabelled(disagree=("p1@0", "p2@5")) is None
    with pytest.raises(StoreError, match="two different models"):
        s.next_unlabelled(disagree=("p1", "p1"))


def test_a_model_named_with_at_digits_is_taken_whole(store):
    store.import_traces([trace("q1", "A")], model="ckpt@3")
    store.import_traces([trace("q1", "B")], model="ckpt", iteration=3)
    store.import_traces([trace("q1", "C")], model="other")
    assert store.next_unlabelled(disagree=("ckpt@3", "other")).model == "ckpt@3"
    assert store.next_unlabelled(disagree=("other", "ckpt@3")).id == 1
    assert store.next_unlabelled(disagree=("ckpt@3", "ckpt@4")) is None  # not a model, and no iteration 4 of ckpt


def test_disagree_set_follows_new_traces(store):
    s = _queue_store(store)
    assert {s.next_unlabelled(disagree=("p1", "p2"), model="p1").trace.question.id} == {"q1"}
    s.label(1, "summarize", "good", annotator="ana")
    assert s.next_unlabelled(disagree=("p1", "p2"), model="p1").trace.question.id == "q3"
    s.label(3, "summarize", "good", annotator="ana")
    assert s.next_unlabelled(disagree=("p1", "p2"), model="p1") is None
    # A new p2 trace on q2 that disagrees makes q2 a disagreement question at once.
    s.import_traces([trace("q2", "B")], model="p2", iteration=1)
    assert s.next_unlabelled(disagree=("p1", "p2"), model="p1").trace.question.id == "q2"


def test_skip_is_per_annotator_and_per_annotator_queues(store):
    s = _queue_store(store)
    s.skip(1, "ana")
    assert s.next_unlabelled(annotator="ana").id == 2
    assert s.next_unlabelled(annotator="bob").id == 1
    assert s.next_unlabelled(annotator="ana", include_skipped=True).id == 1
    s.label(2, "recall", "good", annotator="bob")
    assert s.next_unlabelled(annotator="ana").id == 3  # labelled by anyone counts by default
    assert s.next_unlabelled(annotator="ana", per_annotator=True).id == 2  # double annotation
    with pytest.raises(StoreError, match="no trace with id 99"):
        s.skip(99, "ana")


# ---- labels and undo ------------------------------------------------------------------------------------------------


def test_labels_are_history_and_undo_appends(store):
    s = _queue_store(store)
    a = s.label(1, "recall", "bad", text="Money is kept in banks.", note="too vague", annotator="ana")
    b = s.label(1, "analyze", "good", option="B", annotator="ana")
    c = s.label(1, "recall", "good", annotator="bob")
    assert [lab.id for lab in s.labels(trace_id=1)] == [a.id, b.id, c.id]
    undone = s.undo_last("ana")
    assert (undone.id, undone.undone, undone.undone_by) == (b.id, True, "ana")
    assert s.undo_last("ana").id == a.id  # undo again walks back
    assert s.undo_last("ana") is None
    assert [lab.id for lab in s.labels(trace_id=1)] == [c.id]
    history = s.labels(trace_id=1, include_undone=True)
    assert [(lab.id, lab.undone) for lab in history] == [(a.id, True), (b.id, True), (c.id, False)]
    assert history[0].text == "Money is kept in banks." and history[0].note == "too vague"
    assert counts(s)["labels"] == 3 and counts(s)["undos"] == 2  # nothing deleted or updated
    # An undone label frees the trace for the queue again.
    s.undo_last("bob")
    assert s.next_unlabelled().id == 1


def test_label_targets_are_checked(store):
    s = store
    s.import_traces([trace("q1"), trace("q2", stage_type="summarize")], model="m")
    before = counts(s)
    with pytest.raises(StoreError, match="needs an option"):
        s.label(1, "analyze", "good", annotator="ana")
    with pytest.raises(StoreError, match="no analysis for option 'E'"):
        s.label(1, "analyze", "good", option="E", annotator="ana")
    with pytest.raises(StoreError, match="only given for the analyze stage"):
        s.label(1, "recall", "good", option="A", annotator="ana")
    with pytest.raises(StoreError, match="has no recall stage"):
        s.label(2, "recall", "good", annotator="ana")
    with pytest.raises(StoreError, match="unknown verdict 'great'"):
        s.label(1, "recall", "great", annotator="ana")
    with pytest.raises(StoreError, match="annotator name is required"):
        s.label(1, "recall", "good", annotator=" ")
    with pytest.raises(StoreError, match="whole number"):
        s.label("1", "recall", "good", annotator="ana")
    assert counts(s) == before


def test_one_transaction_per_label(store):
    store.import_traces([trace()], model="m")
    sql = []
    with store.db.tracer(lambda q, p: sql.append(q.strip().split()[0].upper())):
        store.label(1, "recall", "good", annotator="ana")
    assert sql.count("BEGIN") == 1 and sql.count("COMMIT") == 1


# ---- pairs ---------------------------------------------------------------------------------------------------------


def test_curated_pairs_from_labels(store):
    s = store
    q = question("q1")
    # Two recalls and analyses on the same question; trace 3 has another recall, so its analyze prompt differs.
    s.import_traces([trace(q=q, predicted="A", tag=" one"), trace(q=q, predicted="B", tag=" two")], model="p1")
    s.import_traces([trace(q=q, predicted="B", recall="Rivers are wet.", tag=" three")], model="p1", iteration=1)
    s.label(1, "recall", "good", annotator="ana")
    s.label(2, "recall", "bad", annotator="ana")
    s.label(3, "recall", "bad", text="Banks keep money safe.", annotator="bob")
    s.label(3, "recall", "unsure", annotator="cy")  # unsure adds nothing and takes nothing away
    s.label(3, "analyze", "bad", option="A", annotator="bob")
    s.label(1, "analyze", "good", option="A", annotator="bob")
    s.label(2, "summarize", "bad", annotator="ana")
    s.label(2, "summarize", "good", annotator="bob")  # annotators disagree: left out
    pairs = s.curated_pairs()
    recall_prompt = stages.recall_input(q)
    got = {(p.stage, p.chosen, p.rejected) for p in pairs}
    assert got == {
        ("recall", "Banks hold money one.", "Banks hold money two."),
        ("recall", "Banks hold money one.", "Rivers are wet."),
        ("recall", "Banks keep money safe.", "Banks hold money two."),
        ("recall", "Banks keep money safe.", "Rivers are wet."),
    }
    assert all(p.prompt == recall_prompt and p.source == "curated" and p.question_id == "q1" for p in pairs)
    corrected = next(p for p in pairs if p.chosen == "Banks keep money safe." and p.rejected == "Rivers are wet.")
    assert corrected.iteration == 1  # the iteration whose bad text the pair corrects
    assert corrected.provenance["chosen"] == [
        {"trace_id": 3, "model": "p1", "checkpoint": "p1", "iteration": 1,
         "sampling": {"recall": {"do_sample": True, "temperature": 0.7}, "sample_index": 0}, "sample_index": 0,
         "corrected": True, "label_ids": [3], "annotators": ["bob"]}]
    assert corrected.provenance["rejected"][0]["trace_id"] == 3

    # Analyze pairs need the same prompt, and the prompt includes the recall: trace 4 has trace 1's recall.
    s.import_traces([trace(q=q, predicted="C", recall="Banks hold money one.", tag=" four")], model="p1")
    s.label(4, "analyze", "bad", option="A", text="a bank is where money is kept", annotator="ana")
    analyze = [p for p in s.curated_pairs() if p.stage == "analyze"]
    assert {(p.chosen, p.rejected) for p in analyze} == {
        ("option A explained one", "option A explained four"),
        ("a bank is where money is kept", "option A explained four"),
    }  # trace 3's bad analysis followed another recall: no good partner, no pair
    assert all(p.prompt == stages.analyze_input(q, "Banks hold money one.", "A") for p in analyze)
    assert all(p.provenance["option"] == "A" and p.iteration == 0 for p in analyze)


def test_a_text_labelled_both_ways_gives_no_pair(store):
    q = question("q1")
    # The same texts from two samples (sample_index 0 and 1): two traces.
    second = trace(q=q, tag=" x")
    second.sampling = {**second.sampling, "sample_index": 1}
    assert store.import_traces([trace(q=q, tag=" x"), second], model="m") == [1, 2]
    store.label(1, "recall", "good", annotator="ana")
    store.label(2, "recall", "bad", annotator="bob")
    assert store.curated_pairs() == []
    # A later label by the same annotator supersedes the earlier one (both stay in history).
    store.label(2, "recall", "bad", text="Banks hold money, safely.", annotator="bob")
    assert [p.chosen for p in store.curated_pairs()] == []  # 'x' still both good (ana) and bad (bob)
    store.label(1, "recall", "unsure", annotator="ana")
    assert [(p.chosen, p.rejected) for p in store.curated_pairs()] == [
        ("Banks hold money, safely.", "Banks hold money x.")]


def test_add_pairs_stores_phase2_pairs_once(store):
    auto = [
        {"prompt": "P1\nRecall:", "chosen": "good one", "rejected": "bad one", "stage": "recall",
         "question_id": "q1", "provenance": {"model": "runs/p1", "chosen_from": "auto"}},
        Pair(prompt="P2\nAnalyze: For option A,", chosen="yes", rejected="no", stage="analyze",
             question_id="q2", provenance={"option": "A"}),
    ]
    assert store.add_pairs(auto, iteration=1) == 2
    assert store.add_pairs(auto, iteration=1) == 0  # the same pairs again: nothing new
    assert store.add_pairs(auto, iteration=2) == 2  # another iteration is another record
    got = store.pairs(iteration=1)
    assert [(p.stage, p.source, p.iteration, p.question_id) for p in got] == [
        ("recall", "auto", 1, "q1"), ("analyze", "auto", 1, "q2")]
    assert got[0].provenance == {"model": "runs/p1", "chosen_from": "auto"}
    before = counts(store)
    with pytest.raises(StoreError, match="pair #1: unknown stage 'think'"):
        store.add_pairs([auto[0], {**auto[0], "stage": "think"}], iteration=3)
    with pytest.raises(StoreError, match="chosen and rejected are the same"):
        store.add_pairs([{**auto[0], "rejected": "good one"}], iteration=3)
    assert counts(store) == before


def test_pairs_written_by_earlier_versions_keep_their_provenance(store):
    # Phase 2's pairs used to keep their provenance in `meta`.
    old = {"prompt": "P\nRecall:", "chosen": "c", "rejected": "r", "stage": "recall", "question_id": "q1",
           "meta": {"rule": "right vs wrong"}}
    assert store.add_pairs([old], iteration=0) == 1
    assert store.pairs()[0].provenance == {"rule": "right vs wrong"}
    with pytest.raises(StoreError, match="pair #0: missing field 'chosen'"):
        store.add_pairs([{k: v for k, v in old.items() if k != "chosen"}], iteration=0)


# ---- export / import ---------------------------------------------------------------------------------------------


def _labelled_store(store):
    q = question("q1")
    store.import_traces([trace(q=q, predicted="A", tag=" one"), trace(q=q, predicted="B", tag=" two")],
                        model="p1")
    store.import_traces([trace("q2", "C")], model="p2", iteration=1)
    store.label(1, "recall", "good", annotator="ana", note="clear")
    store.label(2, "recall", "bad", text="Banks keep money.", annotator="ana")
    store.label(2, "summarize", "bad", annotator="ana")
    store.undo_last("ana")
    store.label(1, "analyze", "good", option="A", annotator="bob")
    store.add_pairs([{"prompt": "P\nRecall:", "chosen": "c", "rejected": "r", "stage": "recall",
                      "question_id": "q9", "provenance": {"k": 1}}], iteration=1)
    return store


@pytest.mark.parametrize("fmt", ["jsonl", "hf"])
def test_export_and_import_round_trip(store, tmp_path, fmt):
    s = _labelled_store(store)
    out = tmp_path / f"reflection-{fmt}"
    manifest = s.export(out, fmt=fmt, pairs="all")
    assert manifest["pairs"] == 3 and manifest["traces"] == 2 and manifest["labels"] == 4
    assert json.loads((out / "manifest.json").read_text())["format"] == fmt
    exported = [p.to_dict() for p in s.curated_pairs()] + [p.to_dict() for p in s.pairs(source="auto")]

    with Store(tmp_path / f"other-{fmt}.db") as other:
        assert other.import_pairs(out) == 3
        assert [p.to_dict() for p in other.pairs()] == exported
        assert other.import_pairs(out) == 0  # importing again adds nothing
        # The labelled traces come back with their whole label history.
        ids = other.import_file(out)
        assert len(ids) == 2
        for new_id, old_id in zip(ids, (1, 2), strict=True):
            assert other.get_trace(new_id).trace.to_dict() == s.get_trace(old_id).trace.to_dict()
            assert other.get_trace(new_id).model == "p1"
            keep = ("stage", "option", "verdict", "text", "note", "annotator", "created_at", "undone", "undone_by")
            assert [{k: getattr(lab, k) for k in keep} for lab in other.labels(new_id, include_undone=True)] == \
                [{k: getattr(lab, k) for k in keep} for lab in s.labels(old_id, include_undone=True)]
        key = lambda p: (p.stage, p.prompt, p.chosen, p.rejected)  # noqa: E731
        assert sorted(map(key, other.curated_pairs(include_stored=False))) == \
            sorted(map(key, s.curated_pairs()))


def test_export_is_all_or_nothing_and_never_clobbers(store, tmp_path):
    s = _labelled_store(store)
    out = tmp_path / "exp"
    s.export(out, fmt="jsonl")
    with pytest.raises(StoreError, match="not empty; pass --overwrite"):
        s.export(out, fmt="jsonl")
    with pytest.raises(StoreError, match="unknown export format 'csv'"):
        s.export(tmp_path / "x", fmt="csv")
    assert not (tmp_path / "x").exists()
    m = s.export(out, fmt="hf", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "manifest.json", "pairs", "traces"]
    assert m["pair_selection"] == "curated"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_stats_counts(store):
    s = _labelled_store(store)
    s.skip(3, "ana")
    st = s.stats()
    assert (st["traces"], st["questions"], st["models"], st["skips"]) == (3, 2, 2, 1)
    assert st["by_model_iteration"] == [
        {"model": "p1", "iteration": 0, "traces": 2, "correct": 1, "wrong": 1, "unknown": 0, "labelled": 2,
         "unlabelled": 0},
        {"model": "p2", "iteration": 1, "traces": 1, "correct": 0, "wrong": 1, "unknown": 0, "labelled": 0,
         "unlabelled": 1},
    ]
    assert st["labels"]["in_force"] == 3 and st["labels"]["undone"] == 1 and st["labels"]["history"] == 4
    assert st["labels"]["annotators"] == {"ana": 2, "bob": 1}
    assert st["pairs"] == {"stored": {"auto": 1}, "curated_from_labels": 2}


# ---- CLI -----------------------------------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "cli.db")
    src = write_jsonl(tmp_path / "traces.jsonl", [trace("q1", "A"), trace("q1", "B", tag=" 2")])
    assert main(["store", "import", str(src), "--model", "runs/p1", "--iteration", "0", "--db", db]) == 0
    assert "imported 2 traces" in capsys.readouterr().out
    assert main(["store", "next", "--correct", "no", "--json", "--db", db]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == 2 and Trace.from_dict(shown["trace"]).predicted == "B"
    assert main(["store", "label", "2", "--stage", "recall", "--verdict", "bad", "--text", "Banks keep money.",
                 "--annotator", "ana", "--db", db]) == 0
    assert main(["store", "label", "1", "--stage", "analyze", "--option", "A", "--verdict", "good",
                 "--note", "fine", "--annotator", "ana", "--db", db]) == 0
    assert main(["store", "undo", "--annotator", "ana", "--db", db]) == 0
    assert "undid label #2" in capsys.readouterr().out
    assert main(["store", "undo", "--annotator", "zed", "--db", db]) == 1
    # The env var names the db when --db is not given.
    monkeypatch.setenv("TINYTHINKER_DB", db)
    assert main(["store", "stats", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["labels"]["in_force"] == 1 and st["pairs"]["curated_from_labels"] == 1
    assert main(["store", "stats"]) == 0
    assert "runs/p1" in capsys.readouterr().out
    out = tmp_path / "reflection-v1"
    assert main(["store", "export", "--format", "hf", "--out", str(out)]) == 0
    assert main(["store", "import-pairs", str(out), "--db", str(tmp_path / "b.db")]) == 0
    assert "imported 1 new pairs" in capsys.readouterr().out
    assert main(["store", "show", "2"]) == 0
    assert "Banks keep money." in capsys.readouterr().out
    # Library errors are one readable line and exit code 2.
    assert main(["store", "label", "7", "--stage", "recall", "--verdict", "good", "--annotator", "ana"]) == 2
    assert "error: no trace with id 7" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["store", "label", "1", "--stage", "think", "--verdict", "good", "--annotator", "ana"])
