"""Issue 16, item 1: a trace is stored once, whatever file (or line order) it comes in; duplicates are counted.

Identity (tinythinker/store/identity.py): model, iteration, question id, stage type, stage texts, the answer read
from the summary, and sampling (sample_index included). Timings are not part of it.
"""

from __future__ import annotations

import json
import random
import sqlite3

import pytest
import sqlite_utils
from store_helpers import counts, trace, write_jsonl

from tinythinker.cli import main
from tinythinker.store import Store, StoreError
from tinythinker.store.schema import MIGRATIONS


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "tt.db") as s:
        yield s


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_ten_thousand_identical_traces_are_refused_and_counted(store, tmp_path, capsys):
    src = tmp_path / "same.jsonl"
    src.write_text((json.dumps(trace("q1").to_dict()) + "\n") * 10_000)
    rc, out, err = _cli(capsys, "store", "import", str(src), "--model", "m", "--db", str(store.path))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "9,999 of its 10,000 traces are duplicates" in err
    assert f"first: {src} line 2 repeats {src} line 1" in err and "--skip-duplicates" in err
    assert store.count_traces() == 0 and counts(store)["imports"] == 0
    # Asked to, it keeps one and says how many it skipped; stats then count one answer, not 10,000.
    rc, out, err = _cli(capsys, "store", "import", str(src), "--model", "m", "--db", str(store.path),
                        "--skip-duplicates")
    assert rc == 0 and "imported 1 traces" in out
    assert "skipped 9999 duplicates (9999 repeated in the file, 0 already in the store)" in out
    assert store.stats()["by_model_iteration"][0]["traces"] == 1


def test_the_same_traces_reordered_are_the_same_traces(store, tmp_path):
    traces = [trace(f"q{i}", "AB"[i % 2]) for i in range(20)]
    first = write_jsonl(tmp_path / "a.jsonl", traces)
    assert len(store.import_file(first, model="m")) == 20
    shuffled = traces[:]
    random.Random(0).shuffle(shuffled)
    for t in shuffled:  # timings are measurements, not content: a re-timed run is the same trace
        t.stage_timings = {"recall": 9.9}
    second = write_jsonl(tmp_path / "b.jsonl", shuffled)
    assert second.read_bytes() != first.read_bytes()
    before = counts(store)
    with pytest.raises(StoreError, match="20 of its 20 traces are duplicates: 20 are already in the store") as e:
        store.import_file(second, model="m")
    # Callers that file the same traces at every start (tinythinker.jobs, tinythinker.shipped) look for this.
    assert "it was already imported" in str(e.value)
    assert counts(store) == before
    ids = store.import_file(second, model="m", on_duplicate="skip")
    assert ids == [] and ids.duplicates_in_store == 20 and store.count_traces() == 20


def test_what_makes_a_trace_another_trace(store):
    base = trace("q1")
    store.import_traces([base], model="m")
    other_sample = trace("q1")
    other_sample.sampling = {**base.sampling, "sample_index": 1}
    other_text = trace("q1", tag=" again")
    assert store.import_traces([other_sample, other_text], model="m") == [2, 3]
    assert store.import_traces([base], model="m", iteration=1) == [4]  # another iteration
    assert store.import_traces([base], model="other") == [5]  # another model
    # The same trace once more: import_traces (phase 2's call) skips it and counts it; refusing is an option.
    again = store.import_traces([base, trace("q2")], model="m")
    assert again == [6] and again.duplicates_in_store == 1
    with pytest.raises(StoreError, match="1 of its 1 traces are duplicates"):
        store.import_traces([base], model="m", on_duplicate="refuse")
    assert store.db.execute("SELECT COUNT(DISTINCT content_key) FROM traces").fetchone()[0] == 6


def test_the_unique_index_holds_even_by_hand(store):
    store.import_traces([trace("q1")], model="m")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        store.db.execute("INSERT INTO traces (question_id, model_id, iteration, stage_type, analyses, summary, "
                         "created_at, content_key) SELECT question_id, model_id, iteration, stage_type, analyses, "
                         "summary, created_at, content_key FROM traces WHERE id = 1")


def test_a_skipped_duplicate_never_drops_a_label(store, tmp_path):
    store.import_traces([trace("q1"), trace("q2", "B")], model="m")
    store.label(1, "recall", "good", annotator="ana")
    out = tmp_path / "exp"
    store.export(out)
    # Importing the store's own export again: every trace and label is already there; skipping loses nothing.
    ids = store.import_file(out, on_duplicate="skip")
    assert ids == [] and ids.duplicates_in_store == 1
    # The same trace carrying a label the stored copy lacks: skipping it would drop the label, so nothing goes in.
    line = json.loads((out / "traces.jsonl").read_text())
    line["store"]["labels"].append({**line["store"]["labels"][0], "verdict": "bad", "annotator": "bob"})
    (out / "traces.jsonl").write_text(json.dumps(line) + "\n")
    before = counts(store)
    with pytest.raises(StoreError, match=r"the same trace as trace 1 of the store, but it carries 1 label"):
        store.import_file(out, on_duplicate="skip")
    assert counts(store) == before
    # Into another store the export goes whole, labels and all.
    with Store(tmp_path / "other.db") as other:
        [tid] = other.import_file(out)
        assert [(lab.annotator, lab.verdict) for lab in other.labels(tid)] == [("ana", "good"), ("bob", "bad")]


def test_a_skipped_duplicate_still_has_its_question_checked(store):
    from store_helpers import question

    store.import_traces([trace("q1")], model="m")
    changed = trace(q=question("q1", stem="Another stem?"))  # same trace identity, a changed question
    with pytest.raises(StoreError, match="already stored with a different stem"):
        store.import_traces([changed], model="m")


def test_migration_keeps_every_existing_row_and_its_labels(tmp_path):
    """A database from before the unique index, holding the same trace three times (two of them labelled)."""
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    MIGRATIONS.apply(db, stop_before="0004_trace_identity")
    db["questions"].insert({"id": "q1", "stem": "S?", "options": '[{"label": "A", "text": "a"}, '
                            '{"label": "B", "text": "b"}]', "answer": "A", "source": "", "meta": "{}"})
    db["models"].insert({"id": 1, "name": "m", "created_at": "t"})
    for i in (1, 2, 3, 4):
        db["traces"].insert({"id": i, "question_id": "q1", "model_id": 1, "iteration": 0, "stage_type": "summarize",
                             "analyses": "{}", "summary": "s" if i < 4 else "other", "predicted": "A", "correct": 1,
                             "sampling": '{"sample_index": 0}', "created_at": "t"})
    db["labels"].insert_all([{"trace_id": t, "stage": "summarize", "verdict": v, "annotator": "a", "created_at": "t"}
                             for t, v in ((1, "good"), (2, "bad"))])
    db.close()
    with Store(path) as s:
        assert s.count_traces() == 4 and len(s.labels()) == 2
        keys = [r[0] for r in s.db.execute("SELECT content_key FROM traces ORDER BY id")]
        assert keys[0] and keys[3] and keys[1] is None and keys[2] is None  # later copies kept, without a key
        assert s.stats()["legacy_duplicates"] == 2
        assert [lab.trace_id for lab in s.labels()] == [1, 2]
        # The key the migration wrote is the one an import computes: the same trace is still refused.
        t = s.get_trace(1).trace
        with pytest.raises(StoreError, match="already in the store"):
            s.import_traces([t], model="m", iteration=0, on_duplicate="refuse")
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
