"""The store under stress: concurrent annotators, a killed import, bad input, hostile text."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from store_helpers import counts, question, trace, write_jsonl

from tinythinker.store import SCHEMA_VERSION, Store, StoreError

# Workers are forked: they start at once with the store already imported (a fresh interpreter spends most of a
# second importing sqlite-utils, which imports pandas), and each opens its own connection after the fork.
FORK = multiprocessing.get_context("fork")


def _integrity(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


# ---- concurrency -----------------------------------------------------------------------------------------------


def _annotate(db: Path, name: str, go, results) -> None:
    store = Store(db)
    go.wait()
    n = 0
    while (t := store.next_unlabelled(annotator=name, per_annotator=True)) is not None:
        store.label(t.id, ("recall", "summarize")[n % 2], ("good", "bad", "unsure")[n % 3], note=f"{name} #{n}",
                    annotator=name)
        n += 1
    store.close()
    results.put((name, n))


def test_eight_annotators_at_once_lose_and_duplicate_nothing(tmp_path):
    db = tmp_path / "tt.db"
    with Store(db) as s:
        s.import_traces([trace(f"q{i}", "AB"[i % 2]) for i in range(200)], model="m")
    go, results = FORK.Event(), FORK.Queue()
    procs = [FORK.Process(target=_annotate, args=(db, f"a{k}", go, results)) for k in range(8)]
    for p in procs:
        p.start()
    go.set()  # all eight label at the same time, each the 200 traces through its own queue
    done = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert done == {f"a{k}": 200 for k in range(8)}
    assert _integrity(db) == "ok"
    with Store(db) as s:
        rows = s.db.execute("SELECT trace_id, annotator, note FROM labels").fetchall()
    assert len(rows) == 1600
    assert len({(t, a) for t, a, _ in rows}) == 1600  # none duplicated
    assert {(t, a) for t, a, _ in rows} == {(t, f"a{k}") for t in range(1, 201) for k in range(8)}  # none lost
    assert len({n for _, _, n in rows}) == 1600


def _open_and_import(db: Path, k: int, go) -> None:
    go.wait()
    with Store(db) as s:
        s.import_traces([trace(f"first{k}")], model=f"m{k}")


def test_eight_processes_creating_one_new_database_at_once(tmp_path):
    db = tmp_path / "new.db"
    go = FORK.Event()
    procs = [FORK.Process(target=_open_and_import, args=(db, k, go)) for k in range(8)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert _integrity(db) == "ok"
    with Store(db) as s:
        assert s.count_traces() == 8 and len(s.models()) == 8
        # Each migration ran once, not once per process.
        assert s.db.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()[0] == SCHEMA_VERSION


# ---- a killed import -------------------------------------------------------------------------------------------


def _stalled_import(db: Path, marker: Path, n: int, half: int) -> None:
    def traces():
        for i in range(n):
            if i == half:
                marker.write_text("halfway")
                time.sleep(120)
            yield trace(f"big{i}", "A", tag=" " + "words " * 40)

    Store(db).import_traces(traces(), model="big")


def _file_import(db: Path, src: Path, iteration: int) -> None:
    # Another iteration each run: the same traces under the same iteration would be duplicates, refused.
    Store(db).import_file(src, model="big", iteration=iteration)


def _prefill(db: Path) -> dict[str, int]:
    with Store(db) as s:
        s.import_traces([trace("keep1"), trace("keep2")], model="small")
        s.label(1, "recall", "good", annotator="ana")
        return counts(s)


def _kill(p) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.join(timeout=30)


def test_sigkill_mid_import_leaves_none_of_it(tmp_path):
    db = tmp_path / "tt.db"
    before = _prefill(db)
    wal = Path(f"{db}-wal")
    wal_before = wal.stat().st_size if wal.exists() else 0
    marker = tmp_path / "halfway"
    p = FORK.Process(target=_stalled_import, args=(db, marker, 8000, 4000))
    p.start()
    deadline = time.time() + 120
    while not marker.exists():
        assert p.is_alive(), "the import died before halfway"
        assert time.time() < deadline, "the import never got halfway"
        time.sleep(0.05)
    # Half the import sits in the open transaction, part of it already spilled into the WAL file.
    assert wal.stat().st_size > wal_before
    _kill(p)
    assert p.exitcode == -signal.SIGKILL
    assert _integrity(db) == "ok"
    with Store(db) as s:
        assert counts(s) == before
        assert s.next_unlabelled().id == 2  # and the store works as before


def test_sigkill_at_any_moment_leaves_none_or_all(tmp_path):
    db = tmp_path / "tt.db"
    before = _prefill(db)["traces"]
    n = 2500
    src = write_jsonl(tmp_path / "big.jsonl", [trace(f"big{i}", "B", tag=" " + "words " * 40) for i in range(n)])
    t0 = time.time()
    p = FORK.Process(target=_file_import, args=(db, src, 0))
    p.start()
    p.join(timeout=300)
    assert p.exitcode == 0
    full = time.time() - t0
    current = before + n
    outcomes = []
    for run, frac in enumerate((0.1, 0.3, 0.5, 0.7, 0.9, 1.3), start=1):  # of one whole run's time
        p = FORK.Process(target=_file_import, args=(db, src, run))
        p.start()
        time.sleep(full * frac)
        _kill(p)
        assert _integrity(db) == "ok"
        with Store(db) as s:
            got = s.count_traces()
        assert got in (current, current + n), (frac, got)  # none or all of that run's traces
        outcomes.append(got - current)
        current = got
    assert 0 in outcomes  # at least one kill landed before the commit


# ---- bad input ------------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "tt.db") as s:
        s.import_traces([trace("q1"), trace("q2", "B")], model="m")
        yield s


def _lines(path: Path, lines: list[str | bytes]) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n")
    return path


GOOD = json.dumps(trace("n1").to_dict())


@pytest.mark.parametrize("bad, message", [
    ('{"question": {"id": "x", ', "line 3: not valid JSON"),
    ("[1, 2, 3]", "line 3: expected a JSON object, got list"),
    ('{"recall": "no question"}', "line 3: missing field 'question'"),
    (json.dumps({**trace("n3").to_dict(), "predicted": "Z"}), "line 3: field 'predicted' is 'Z'"),
    (json.dumps({**trace("n3").to_dict(), "stage_type": "think_hard"}), "line 3: field 'stage_type'"),
    (json.dumps({**trace("n3").to_dict(), "correct": "yes"}), "line 3: field 'correct'"),
    (json.dumps({**trace("n3").to_dict(), "recall": "x" * 100_000}),
     "line 3: field 'recall' is 100,000 characters long; the limit is 10,000"),
    (json.dumps({**trace("n3").to_dict(), "summary": "a\u0000b"}), "line 3: field 'summary' contains the control"),
    ('{"question": {"id": "x", "stem": "\\ud800", "options": [], "answer": null}, "summary": "s"}',
     "line 3: field 'question"),
    (json.dumps({**trace("n3").to_dict(), "sampling": {"t": float("nan")}}), "line 3: field 'sampling'"),
    (b'{"recall": "caf\xe9"}', "line 3: not UTF-8 text"),
])
def test_bad_jsonl_names_file_and_line_and_writes_nothing(store, tmp_path, bad, message):
    path = _lines(tmp_path / "traces.jsonl", [GOOD, "", bad, GOOD])
    before = counts(store)
    with pytest.raises(StoreError) as err:
        store.import_file(path, model="m")
    assert str(path) in str(err.value) and message in str(err.value)
    assert counts(store) == before


def test_missing_and_empty_files(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        store.import_file(tmp_path / "nope.jsonl")
    empty = _lines(tmp_path / "empty.jsonl", ["", "  "])
    before = counts(store)
    with pytest.raises(StoreError, match="no traces in it"):
        store.import_file(empty, model="m")
    assert counts(store) == before
    (tmp_path / "folder").mkdir()
    with pytest.raises(StoreError, match="without traces.jsonl"):
        store.import_file(tmp_path / "folder")
    with pytest.raises(StoreError, match="without pairs.jsonl"):
        store.import_pairs(tmp_path / "folder")


def test_bad_labels_write_nothing(store):
    before = counts(store)
    cases = [
        (dict(trace_id=1, stage="think", verdict="good"), "unknown stage 'think'"),
        (dict(trace_id=999, stage="recall", verdict="good"), "no trace with id 999"),
        (dict(trace_id=1, stage="recall", verdict="bad", text="y" * 100_000),
         "field 'text' is 100,000 characters long; the limit is 10,000"),
        (dict(trace_id=1, stage="recall", verdict="bad", note="n" * 100_000), "field 'note' is 100,000"),
        (dict(trace_id=1, stage="recall", verdict="bad", text="nul\x00here"), "control character U+0000"),
        (dict(trace_id=1, stage="recall", verdict="bad", text="half \ud83d"), "lone surrogate U+D83D"),
    ]
    for kwargs, message in cases:
        with pytest.raises(StoreError, match=re.escape(message)):
            store.label(annotator="ana", **kwargs)
    with pytest.raises(StoreError, match="annotator"):
        store.label(1, "recall", "good", annotator="x" * 500)
    assert counts(store) == before


def test_an_export_with_a_bad_label_imports_nothing(store, tmp_path):
    store.label(1, "recall", "good", annotator="ana")
    out = tmp_path / "exp"
    store.export(out)
    line = json.loads((out / "traces.jsonl").read_text())
    line["store"]["labels"][0]["stage"] = "ponder"
    _lines(out / "traces.jsonl", [json.dumps(line)])
    with Store(tmp_path / "other.db") as other:
        before = counts(other)
        with pytest.raises(StoreError, match=r"line 1: label #0: unknown stage 'ponder'"):
            other.import_file(out)
        assert counts(other) == before


ODD = [
    "🧠💸 emoji, 👩‍👩‍👧 a ZWJ family, 🏳️‍🌈 a flag",
    "مرحبا بالعالم — Arabic, right to left",
    "שלום עולם and \u202eoverride\u202c and \u200fmarks\u200e",
    "e\u0301 combining, \ufeff BOM, \u2028 line separator, \uffff noncharacter",
    "中文 日本語 한국어 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "tabs\tand\nnewlines\r\nkept",
]


def test_odd_unicode_round_trips_exactly(tmp_path):
    db = tmp_path / "tt.db"
    with Store(db) as s:
        traces = [trace(q=question(f"u{i}", stem=f"Which? {odd}"), recall=odd, tag=odd) for i, odd in enumerate(ODD)]
        src = write_jsonl(tmp_path / "odd.jsonl", traces)
        ids = s.import_file(src, model="modèle/αβγ")
        for i, (tid, odd) in enumerate(zip(ids, ODD, strict=True)):
            assert s.get_trace(tid).trace.to_dict() == {**traces[i].to_dict(), "model": "modèle/αβγ"}
            s.label(tid, "recall", "bad", text=odd[::-1], note=odd, annotator=f"ann {odd[:3]}")
        got = s.labels()
        assert [(lab.text, lab.note) for lab in got] == [(odd[::-1], odd) for odd in ODD]
        out = tmp_path / "exp"
        s.export(out, fmt="hf")
        with Store(tmp_path / "b.db") as other:
            other.import_file(out)
            other.import_pairs(out)
            assert [(lab.text, lab.note, lab.annotator) for lab in other.labels()] == \
                [(lab.text, lab.note, lab.annotator) for lab in got]
            assert [p.to_dict() for p in other.pairs()] == [p.to_dict() for p in s.curated_pairs()]


def test_hostile_strings_never_reach_sql_text(tmp_path):
    """Every value goes in as a parameter: trace every statement and look for the values in the SQL."""
    hostile = ["x'); DROP TABLE labels; --", 'q" OR 1=1 --', "Robert'); DELETE FROM traces;--"]
    sql: list[str] = []
    with Store(tmp_path / "tt.db") as s:
        with s.db.tracer(lambda q, p: sql.append(q)):
            q = question(hostile[1], stem=hostile[0])
            ids = s.import_traces([trace(q=q, recall=hostile[2]), trace(q=q, predicted="B")], model=hostile[0])
            s.label(ids[0], "recall", "good", text=hostile[1], note=hostile[2], annotator=hostile[0])
            s.label(ids[1], "recall", "bad", annotator=hostile[2])
            s.skip(ids[1], hostile[1])
            s.next_unlabelled(model=hostile[0], annotator=hostile[1], disagree=(hostile[0], hostile[0] + "@0"))
            s.undo_last(hostile[2])
            s.add_pairs([{"prompt": hostile[0], "chosen": hostile[1], "rejected": hostile[2], "stage": "recall",
                          "question_id": hostile[1]}], iteration=0)
            s.curated_pairs()
            s.stats()
        assert {"labels", "traces", "questions"} <= set(s.db.table_names())
        assert s.labels(include_undone=True)[0].annotator == hostile[0]
    assert len(sql) > 20
    for text in sql:
        for h in hostile:
            assert h not in text
