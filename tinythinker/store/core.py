"""The SQLite annotation store: traces in, labels on them, preference pairs out.

Writes: every write is one `BEGIN IMMEDIATE` transaction (one per label, one per import), so a reader never sees
half of one and a killed process leaves none of it. WAL mode lets annotators read while another writes; the busy
timeout makes concurrent writers wait their turn instead of failing. All values travel as SQL parameters; the only
text put into SQL is fixed fragments chosen in this file.

History: `labels` only grows. A newer label from the same annotator on the same stage supersedes the older one in
every reader (the older row stays); `undo_last` appends a row to `undos` that retracts the annotator's latest label
still in force, so undo can be repeated to walk back, and nothing is ever deleted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from tinythinker import stages
from tinythinker.store import agreement as agreement_mod
from tinythinker.store import pairs as pairs_mod
from tinythinker.store.identity import trace_key
from tinythinker.store.schema import migrate
from tinythinker.store.validate import (
    MAX_INT,
    MAX_NAME_CHARS,
    StoreError,
    check_iteration,
    check_name,
    check_question,
    check_sample_index,
    check_stage,
    check_text,
    check_trace,
    check_verdict,
    to_json,
)
from tinythinker.types import Option, Question, Trace

DEFAULT_DB = Path("annotations") / "tinythinker.db"
BATCH = 500  # rows per INSERT batch inside an import's one transaction


def resolve_db_path(path: str | os.PathLike | None = None) -> Path:
    """The argument, else env TINYTHINKER_DB, else annotations/tinythinker.db."""
    return Path(path or os.environ.get("TINYTHINKER_DB") or DEFAULT_DB)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


@dataclass
class StoredTrace:
    id: int
    model: str
    iteration: int
    trace: Trace
    import_id: int | None = None
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "iteration": self.iteration, "import_id": self.import_id,
                "created_at": self.created_at, "trace": self.trace.to_dict()}


@dataclass
class Label:
    id: int
    trace_id: int
    stage: str
    option: str | None
    verdict: str
    text: str | None
    note: str | None
    annotator: str
    created_at: str
    undone: bool = False
    undone_at: str | None = None
    undone_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImportRecord:
    """One trace to import; model / iteration / labels come from an exported store line when it has them."""

    where: str
    trace: Trace
    model: str | None = None
    iteration: int | None = None
    labels: list[dict[str, Any]] | None = None


# What an import does with a trace the store already holds, or one that repeats an earlier trace of the same
# input (see identity.py): "refuse" the whole import (nothing written), or "skip" it and count it.
ON_DUPLICATE = ("refuse", "skip")


class ImportResult(list):
    """The new trace ids in input order (a list, as before), with the duplicates an import skipped counted."""

    def __init__(self, ids: Iterable[int] = (), duplicates_in_input: int = 0, duplicates_in_store: int = 0):
        super().__init__(ids)
        self.duplicates_in_input = duplicates_in_input
        self.duplicates_in_store = duplicates_in_store

    @property
    def duplicates(self) -> int:
        return self.duplicates_in_input + self.duplicates_in_store


def _label_sig(labels: list[Any] | None, where: str) -> set[str]:
    """Labels as comparable strings, to tell whether a skipped duplicate carries labels its kept copy lacks."""
    out = set()
    for i, d in enumerate(labels or []):
        if isinstance(d, Label):
            d = d.to_dict()
        if not isinstance(d, dict):
            raise StoreError(f"{where}: label #{i}: not an object")
        out.add(json.dumps([d.get("stage"), d.get("option"), d.get("verdict"), d.get("text") or None,
                            d.get("note") or None, str(d.get("annotator") or "").strip(), d.get("created_at"),
                            bool(d.get("undone"))], sort_keys=True, default=str))
    return out


def _duplicates_message(source: str | None, total: int, repeats: list[tuple[str, str]],
                        stored_dups: list[tuple[str, int]]) -> str:
    n = len(repeats) + len(stored_dups)
    parts = []
    if repeats:
        parts.append(f"{len(repeats):,} repeat an earlier trace of the input (first: {repeats[0][0]} repeats "
                     f"{repeats[0][1]})")
    if stored_dups:
        parts.append(f"{len(stored_dups):,} are already in the store (first: {stored_dups[0][0]} is trace "
                     f"{stored_dups[0][1]})")
    # "already imported" is the phrase callers that file the same traces at every start look for (jobs, shipped).
    rest = (f"--skip-duplicates (on_duplicate='skip') imports the {total - n:,} others" if total > n
            else "it was already imported: there is nothing new in it" if len(stored_dups) == total
            else "there is nothing new in it")
    return (f"{source or 'the input'}: {n:,} of its {total:,} traces are duplicates: {'; '.join(parts)}. A trace is "
            f"the same trace when model, iteration, question, stage texts and sampling agree. Nothing was "
            f"imported; {rest}")


@dataclass
class ModelSpec:
    """A model in a filter: `name` or `name@iteration`."""

    name: str
    iteration: int | None = None

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        name, sep, it = spec.rpartition("@")
        if sep and it.isdigit() and name:
            return cls(name, int(it))
        return cls(spec)

    def __str__(self) -> str:
        return self.name if self.iteration is None else f"{self.name}@{self.iteration}"


_TRACE_SELECT = """
SELECT t.id, t.iteration, t.import_id, t.created_at, t.stage_type, t.recall, t.analyses, t.summary, t.predicted,
       t.correct, t.stage_timings, t.sampling, m.name AS model,
       q.id AS q_id, q.stem, q.options, q.answer, q.source, q.meta
FROM traces t JOIN models m ON m.id = t.model_id JOIN questions q ON q.id = t.question_id
"""

_LABEL_SELECT = """
SELECT l.*, u.created_at AS undone_at, u.annotator AS undone_by
FROM labels l LEFT JOIN undos u ON u.label_id = l.id
"""


def _row_to_stored(r: dict[str, Any]) -> StoredTrace:
    q = Question(
        id=r["q_id"], stem=r["stem"], options=[Option(**o) for o in json.loads(r["options"])],
        answer=r["answer"], source=r["source"] or "", meta=json.loads(r["meta"] or "{}"),
    )
    trace = Trace(
        question=q, recall=r["recall"], analyses=json.loads(r["analyses"]), summary=r["summary"],
        predicted=r["predicted"], correct=None if r["correct"] is None else bool(r["correct"]),
        stage_timings=json.loads(r["stage_timings"] or "{}"), sampling=json.loads(r["sampling"] or "{}"),
        stage_type=r["stage_type"], model=r["model"],
    )
    return StoredTrace(id=r["id"], model=r["model"], iteration=r["iteration"], trace=trace,
                       import_id=r["import_id"], created_at=r["created_at"])


def _row_to_label(r: dict[str, Any]) -> Label:
    return Label(id=r["id"], trace_id=r["trace_id"], stage=r["stage"], option=r["option"], verdict=r["verdict"],
                 text=r["text"], note=r["note"], annotator=r["annotator"], created_at=r["created_at"],
                 undone=r["undone_at"] is not None, undone_at=r["undone_at"], undone_by=r["undone_by"])


def _check_label_target(stored: StoredTrace, stage: str, option: str | None) -> None:
    t = stored.trace
    if not stages.uses(t.stage_type, stage):
        raise StoreError(f"trace {stored.id} (stage type {t.stage_type}) has no {stage} stage")
    if stage == stages.ANALYZE:
        if option is None:
            raise StoreError(f"an analyze label needs an option (one of {', '.join(t.question.labels)})")
        if option not in t.analyses:
            raise StoreError(f"trace {stored.id} has no analysis for option {option!r} "
                             f"(it has {', '.join(sorted(t.analyses)) or 'none'})")
    elif option is not None:
        raise StoreError(f"an option is only given for the analyze stage, not for {stage}")
    if stage == stages.RECALL and t.recall is None:
        raise StoreError(f"trace {stored.id} has no recall text")


def _open_schema(db: sqlite_utils.Database, path: str, busy_timeout: float) -> int:
    """WAL mode, then the migrations; returns the schema version.

    SQLite may answer "database is locked" at once instead of calling the busy handler where waiting could
    deadlock, as when several processes turn one new file to WAL together (seen about once in three full test
    runs). Every step here is idempotent, so the sequence is retried until the busy timeout runs out."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            db.enable_wal()
            # In WAL mode NORMAL still commits atomically and survives a killed process; only a power cut can
            # lose the last commits. It avoids an fsync per label.
            db.execute("PRAGMA synchronous = NORMAL")
            return migrate(db, path)
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _check_db_path(path: Path, create: bool) -> None:
    """Refuse, in words, a database path SQLite could not use, before SQLite tries (and creates files)."""
    if path.is_dir():
        raise StoreError(f"database path {path} is a folder; give a file such as {path / 'tt.db'}")
    if path.exists():
        if not path.is_file():
            from tinythinker.data.records import describe_path

            raise StoreError(f"database path {path} is {describe_path(path)}, not a regular file")
        return
    if not create:
        raise StoreError(f"no database at {path}: check --db (or $TINYTHINKER_DB); only `store import` and "
                         "`store import-pairs` create a new one")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise StoreError(f"cannot create database {path}: {parent} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the folder {path.parent} for database {path}: {e.strerror or e}") from None


def _sqlite_error(path: Path, e: sqlite3.Error) -> StoreError:
    """An error SQLite gave on opening or writing `path`, said with its likely cause."""
    msg = str(e)
    folder = path.parent
    if "readonly" in msg or "read-only" in msg:
        if path.exists() and not os.access(path, os.W_OK):
            why = "the file is read-only"
        elif not os.access(folder, os.W_OK):
            why = f"its folder {folder} is read-only (SQLite writes {path.name}-wal and -shm beside it)"
        else:
            why = msg
        return StoreError(f"database {path} is read-only: {why}; the store writes even to read (its WAL journal "
                          "and schema check), so make it writable or work on a copy")
    if "unable to open" in msg:
        if path.exists() and not os.access(path, os.R_OK):
            why = "no permission to read it"
        elif not os.access(folder, os.W_OK | os.X_OK):
            why = f"its folder {folder} is not writable (SQLite creates the database and its -wal and -shm files there)"
        else:
            why = msg
        return StoreError(f"cannot open database {path}: {why}")
    if "locked" in msg or "busy" in msg:
        return StoreError(f"database {path} stayed locked by another writer ({msg})")
    if isinstance(e, sqlite3.OperationalError) and "not a database" not in msg:
        return StoreError(f"database {path}: {msg}")
    return StoreError(f"{path} is not a usable SQLite database ({msg})")


class Store:
    """One SQLite file. Open one Store per process (or thread); they coordinate through SQLite's locks.

    `create=False` (the CLI's commands that only read or label) refuses a path where no database is, instead of
    creating an empty one there: a mistyped --db is an error, not a new file."""

    def __init__(self, path: str | os.PathLike | None = None, *, busy_timeout: float = 60.0, create: bool = True):
        self.path = resolve_db_path(path)
        _check_db_path(self.path, create)
        try:
            self.db = sqlite_utils.Database(self.path)
        except sqlite3.Error as e:
            raise _sqlite_error(self.path, e) from e
        try:
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self.db.execute("PRAGMA foreign_keys = ON")
            self.schema_version = _open_schema(self.db, str(self.path), busy_timeout)
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise _sqlite_error(self.path, e) from e
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise _sqlite_error(self.path, e) from None
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException as e:
            self.db.rollback()
            if isinstance(e, sqlite3.OperationalError):  # read-only, disk full, I/O error: none of it was kept
                raise _sqlite_error(self.path, e) from e
            raise

    def _one(self, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
        return next(self.db.query(sql, list(params)), None)

    # ---- models -----------------------------------------------------------------------------------------------

    def models(self) -> list[str]:
        return [r["name"] for r in self.db.query("SELECT name FROM models ORDER BY id")]

    def _model_id(self, name: str) -> int:
        r = self._one("SELECT id FROM models WHERE name = ?", [name])
        if r is None:
            known = ", ".join(self.models()) or "none yet"
            raise StoreError(f"no model named {name!r} in {self.path} (models: {known})")
        return r["id"]

    def _ensure_model(self, name: str, cache: dict[str, int]) -> int:
        if name not in cache:
            r = self._one("SELECT id FROM models WHERE name = ?", [name])
            if r is None:
                self.db["models"].insert({"name": name, "created_at": _now()})
                r = self._one("SELECT id FROM models WHERE name = ?", [name])
            cache[name] = r["id"]
        return cache[name]

    # ---- import ------------------------------------------------------------------------------------------------

    def import_traces(self, traces: Iterable[Trace], model: str | None = None, iteration: int | None = 0,
                      source: str | None = None, on_duplicate: str = "skip") -> ImportResult:
        """File traces under `model` (else each trace's own `model` field) and `iteration`, in one transaction:
        all of them or, on any error, none. Returns the new trace ids in input order. A trace the store already
        holds (identity.py) is skipped and counted (`result.duplicates`) by default, so that filing the same
        traces again (a resumed phase 2 iteration) adds nothing; on_duplicate="refuse" refuses them."""
        records = (ImportRecord(f"trace #{i}", t) for i, t in enumerate(traces))
        return self.import_records(records, model=model, iteration=iteration, source=source,
                                   on_duplicate=on_duplicate)

    def import_file(self, path: str | os.PathLike, model: str | None = None, iteration: int | None = None,
                    allow_duplicate: bool = False, on_duplicate: str = "refuse") -> ImportResult:
        """A JSONL file of Trace dicts (what `evaluate --out` writes), or a store export (JSONL or datasets
        folder, its labels included). Errors name the file and line; nothing is written unless all is good.
        Duplicates (traces already stored, or repeated in the file; identity.py) refuse the whole file by default,
        saying how many; on_duplicate="skip" (`--skip-duplicates`; `allow_duplicate`, its old name) imports the
        others and counts the skipped ones on the result."""
        from tinythinker.store.files import file_sha256, read_trace_records, trace_source

        path = Path(path)
        src = trace_source(path)  # what will be read, checked to be a file or folder before anything reads it
        sha = file_sha256(src)
        return self.import_records(read_trace_records(src), model=model, iteration=iteration, source=str(path),
                                   sha256=sha, empty_ok=False, on_duplicate="skip" if allow_duplicate else on_duplicate)

    def import_records(self, records: Iterable[ImportRecord], model: str | None = None,
                       iteration: int | None = 0, source: str | None = None,
                       sha256: str | None = None, empty_ok: bool = True,
                       before: Callable[[], None] | None = None, on_duplicate: str = "skip") -> ImportResult:
        if on_duplicate not in ON_DUPLICATE:
            raise StoreError(f"unknown on_duplicate {on_duplicate!r}; choose one of {', '.join(ON_DUPLICATE)}")
        if model is not None:
            model = check_name(model, "model")
        if iteration is not None:
            check_iteration(iteration)
        ids: list[int] = []
        # identity -> (where it first came, the labels it carried, its id if it is a stored trace)
        keys: dict[str, tuple[str, set[str] | None, int | None]] = {}
        repeats: list[tuple[str, str]] = []  # (where, where the same trace came first in this input)
        stored_dups: list[tuple[str, int]] = []  # (where, the id of the stored trace it repeats)
        total = 0
        models: dict[str, int] = {}
        questions: dict[str, tuple] = {}
        seen_questions: dict[str, tuple] = {}
        with self._write():
            if before is not None:
                before()  # a check that must see the database under the write lock (a duplicate import)
            now = _now()
            import_row = {"source": source, "sha256": sha256, "iteration": iteration, "n_traces": 0,
                          "created_at": now,
                          "model_id": self._ensure_model(model, models) if model is not None else None}
            import_id = self.db["imports"].insert(import_row).last_pk
            next_id = self._one("SELECT COALESCE(MAX(id), 0) + 1 AS n FROM traces")["n"]
            batch: list[dict[str, Any]] = []
            batch_q: list[tuple[str, Question, str]] = []
            carried: list[tuple[int, ImportRecord]] = []
            for rec in records:
                total += 1
                t = rec.trace
                where = rec.where
                options_json = self._checked_question(t.question, where, seen_questions)
                check_trace(t, where)
                name = model or rec.model or rec.trace.model
                if not name:
                    raise StoreError(f"{rec.where}: no model name; pass --model (or model=) or set the trace's "
                                     f"'model' field")
                name = check_name(name, "model", rec.where)
                it = iteration if iteration is not None else (rec.iteration if rec.iteration is not None else 0)
                check_iteration(it, rec.where)
                sample_index = check_sample_index(t.sampling, where)
                analyses_json = to_json(t.analyses, "analyses", where)
                sampling_json = to_json(t.sampling, "sampling", where)
                key = trace_key(name, it, t.question.id, t.stage_type, t.recall, t.analyses, t.summary, t.predicted,
                                t.sampling)
                if self._is_duplicate(key, rec, keys, repeats, stored_dups, on_duplicate):
                    # Not stored again, but its question is still checked against the stored one.
                    batch_q.append((where, t.question, options_json))
                    if len(batch_q) >= BATCH:
                        self._flush(batch, batch_q, questions)
                    continue
                batch.append({
                    "id": next_id, "question_id": t.question.id, "model_id": self._ensure_model(name, models),
                    "iteration": it, "import_id": import_id, "stage_type": t.stage_type, "recall": t.recall,
                    "analyses": analyses_json, "summary": t.summary,
                    "predicted": t.predicted, "correct": None if t.correct is None else int(t.correct),
                    "stage_timings": to_json(t.stage_timings, "stage_timings", where),
                    "sampling": sampling_json, "sample_index": sample_index, "content_key": key, "created_at": now,
                })
                batch_q.append((where, t.question, options_json))
                if rec.labels:
                    carried.append((next_id, rec))
                ids.append(next_id)
                next_id += 1
                if len(batch) >= BATCH:
                    self._flush(batch, batch_q, questions)
            self._flush(batch, batch_q, questions)
            if not total and not empty_ok:
                raise StoreError(f"{source}: no traces in it (blank lines only)")
            if (repeats or stored_dups) and on_duplicate == "refuse":
                raise StoreError(_duplicates_message(source, total, repeats, stored_dups))
            self.db.execute("UPDATE imports SET n_traces = ? WHERE id = ?", [len(ids), import_id])
            for trace_id, rec in carried:
                self._import_labels(trace_id, rec)
        return ImportResult(ids, duplicates_in_input=len(repeats), duplicates_in_store=len(stored_dups))

    def _is_duplicate(self, key: str, rec: ImportRecord, keys: dict[str, tuple[str, set[str] | None, int | None]],
                      repeats: list[tuple[str, str]], stored_dups: list[tuple[str, int]], on_duplicate: str) -> bool:
        """Whether this record repeats a trace of the same input or one already stored (counted in `repeats` /
        `stored_dups`). A skipped copy may not carry labels its kept copy lacks: a label is never dropped."""
        seen = keys.get(key)
        if seen is None:
            r = self._one("SELECT id FROM traces WHERE content_key = ?", [key])
            if r is None:
                keys[key] = (rec.where, _label_sig(rec.labels, rec.where) if rec.labels else None, None)
                return False
            stored_dups.append((rec.where, r["id"]))
            keys[key] = (rec.where, None, r["id"])
            kept_where, kept_labels, kept_id = rec.where, None, r["id"]
        else:
            kept_where, kept_labels, kept_id = seen
            repeats.append((rec.where, kept_where))
        if rec.labels and on_duplicate == "skip":
            if kept_id is not None:
                kept_labels = _label_sig(self.labels(kept_id, include_undone=True), f"trace {kept_id}")
            missing = _label_sig(rec.labels, rec.where) - (kept_labels or set())
            if missing:
                same = f"trace {kept_id} of the store" if kept_id is not None else kept_where
                raise StoreError(f"{rec.where}: the same trace as {same}, but it carries {len(missing)} label(s) "
                                 f"that one lacks; skipping it would drop them, so nothing was imported")
        return True

    @staticmethod
    def _checked_question(q: Question, where: str, seen: dict[str, tuple]) -> str:
        """Validate a question once per import (samples repeat it); returns its options as stored JSON."""
        key = (q.stem, q.answer, q.source, tuple((o.label, o.text) for o in q.options)) \
            if isinstance(q.options, list) and all(isinstance(o, Option) for o in q.options) else None
        hit = seen.get(q.id) if key is not None else None
        if hit is not None and hit[0] == key:
            return hit[1]
        check_question(q, where)
        options_json = to_json([{"label": o.label, "text": o.text} for o in q.options], "question.options", where)
        to_json(q.meta, "question.meta", where)
        seen[q.id] = (key, options_json)
        return options_json

    def _flush(self, batch: list[dict], batch_q: list[tuple[str, Question, str]],
               known: dict[str, tuple]) -> None:
        new_ids = list({q.id for _, q, _ in batch_q if q.id not in known})
        for i in range(0, len(new_ids), 500):
            chunk = new_ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.db.query(f"SELECT id, stem, options, answer FROM questions WHERE id IN ({marks})",
                                   chunk):
                known[r["id"]] = (r["stem"], r["options"], r["answer"])
        fresh = []
        for where, q, options_json in batch_q:
            mine = (q.stem, options_json, q.answer)
            if q.id not in known:
                known[q.id] = mine
                fresh.append({"id": q.id, "stem": q.stem, "options": options_json, "answer": q.answer,
                              "source": q.source, "meta": to_json(q.meta, "question.meta", where)})
            elif known[q.id] != mine:
                raise StoreError(
                    f"{where}: question {q.id!r} is already stored with a different stem, options or answer; "
                    f"the prompts of its pairs would not match. Give the changed question a new id"
                )
        if fresh:
            self.db["questions"].insert_all(fresh, batch_size=BATCH)
        if batch:
            self.db["traces"].insert_all(batch, batch_size=BATCH)
        batch.clear()
        batch_q.clear()

    def _import_labels(self, trace_id: int, rec: ImportRecord) -> None:
        stored = self.get_trace(trace_id)
        for i, d in enumerate(rec.labels or []):
            where = f"{rec.where}: label #{i}"
            if not isinstance(d, dict):
                raise StoreError(f"{where}: not an object")
            stage = check_stage(d.get("stage"), where)
            option = d.get("option")
            try:
                _check_label_target(stored, stage, option)
            except StoreError as e:
                raise StoreError(f"{where}: {e}") from None
            lab = self._label_row(trace_id, stage, d.get("verdict"), d.get("text"), d.get("note"),
                                  d.get("annotator"), option, where)
            lab["created_at"] = check_text(d.get("created_at") or _now(), "created_at", where=where,
                                           limit=MAX_NAME_CHARS)
            label_id = self.db["labels"].insert(lab).last_pk
            if d.get("undone"):
                self.db["undos"].insert({
                    "label_id": label_id, "annotator": check_name(d.get("undone_by") or lab["annotator"],
                                                                  "undone_by", where),
                    "created_at": check_text(d.get("undone_at") or _now(), "undone_at", where=where,
                                             limit=MAX_NAME_CHARS),
                })

    # ---- reading traces ------------------------------------------------------------------------------------------

    def get_trace(self, trace_id: int) -> StoredTrace:
        if isinstance(trace_id, bool) or not isinstance(trace_id, int):
            raise StoreError(f"a trace id is a whole number, got {trace_id!r}")
        if not 1 <= trace_id <= MAX_INT:  # SQLite could not even look it up
            raise StoreError(f"no trace with id {trace_id} in {self.path} (trace ids run from 1 to {MAX_INT})")
        r = self._one(_TRACE_SELECT + " WHERE t.id = ?", [trace_id])
        if r is None:
            raise StoreError(f"no trace with id {trace_id} in {self.path}")
        return _row_to_stored(r)

    def iter_traces(self, which: str = "all") -> Iterator[StoredTrace]:
        """Traces in id order: `all`, `labelled` (a label in force) or `with_history` (any label, even undone)."""
        where = {
            "all": "",
            "labelled": " WHERE t.n_current > 0",
            "with_history": " WHERE EXISTS (SELECT 1 FROM labels l WHERE l.trace_id = t.id)",
        }.get(which)
        if where is None:
            raise StoreError(f"unknown trace selection {which!r}; choose all, labelled or with_history")
        for r in self.db.query(_TRACE_SELECT + where + " ORDER BY t.id"):
            yield _row_to_stored(r)

    def count_traces(self) -> int:
        return self._one("SELECT COUNT(*) AS n FROM traces")["n"]

    # ---- labels ---------------------------------------------------------------------------------------------------

    def _label_row(self, trace_id: int, stage: str, verdict: Any, text: Any, note: Any, annotator: Any,
                   option: Any, where: str = "") -> dict[str, Any]:
        prefix = f"{where}: " if where else ""
        try:
            check_verdict(verdict)
        except StoreError as e:
            raise StoreError(f"{prefix}{e}") from None
        if annotator is None or (isinstance(annotator, str) and not annotator.strip()):
            raise StoreError(f"{prefix}an annotator name is required")
        return {
            "trace_id": trace_id, "stage": stage, "option": option, "verdict": verdict,
            # An empty corrected text is no correction.
            "text": check_text(text, "text", where=where) if text else None,
            "note": check_text(note, "note", where=where) if note else None,
            "annotator": check_name(annotator, "annotator", where),
        }

    def label(self, trace_id: int, stage: str, verdict: str, text: str | None = None, note: str | None = None,
              annotator: str | None = None, option: str | None = None) -> Label:
        """Add one label, in its own transaction. `option` names the analysis for the analyze stage."""
        check_stage(stage)
        row = self._label_row(trace_id, stage, verdict, text, note, annotator, option)
        with self._write():
            stored = self.get_trace(trace_id)
            _check_label_target(stored, stage, option)
            row["created_at"] = _now()
            label_id = self.db["labels"].insert(row).last_pk
        return Label(id=label_id, **row)

    def undo_last(self, annotator: str) -> Label | None:
        """Retract `annotator`'s latest label still in force (appends to `undos`); None when there is none."""
        annotator = check_name(annotator, "annotator")
        with self._write():
            r = self._one("SELECT * FROM current_labels WHERE annotator = ? ORDER BY id DESC LIMIT 1",
                          [annotator])
            if r is None:
                return None
            now = _now()
            self.db["undos"].insert({"label_id": r["id"], "annotator": annotator, "created_at": now})
        return _row_to_label({**r, "undone_at": now, "undone_by": annotator})

    def skip(self, trace_id: int, annotator: str) -> None:
        """Leave a trace out of `annotator`'s queue (it stays for everyone else)."""
        annotator = check_name(annotator, "annotator")
        with self._write():
            self.get_trace(trace_id)
            self.db["skips"].insert({"trace_id": trace_id, "annotator": annotator, "created_at": _now()})

    def labels(self, trace_id: int | None = None, annotator: str | None = None,
               include_undone: bool = False) -> list[Label]:
        clauses, params = [], []
        if trace_id is not None:
            if isinstance(trace_id, bool) or not isinstance(trace_id, int) or not 1 <= trace_id <= MAX_INT:
                raise StoreError(f"no trace with id {trace_id!r} in {self.path} (trace ids run from 1 to {MAX_INT})")
            clauses.append("l.trace_id = ?")
            params.append(trace_id)
        if annotator is not None:
            clauses.append("l.annotator = ?")
            params.append(annotator)
        if not include_undone:
            clauses.append("u.id IS NULL")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        return [_row_to_label(r) for r in self.db.query(_LABEL_SELECT + where + " ORDER BY l.id", params)]

    # ---- the queue ------------------------------------------------------------------------------------------------

    def _model_clause(self, spec: ModelSpec, alias: str) -> tuple[str, list[Any]]:
        sql, params = f"{alias}.model_id = ?", [self._model_id(spec.name)]
        if spec.iteration is not None:
            sql += f" AND {alias}.iteration = ?"
            params.append(spec.iteration)
        return f"({sql})", params

    def _fill_disagree(self, a: ModelSpec, b: ModelSpec) -> None:
        """Questions where some trace of A and some trace of B predicted differently, into temp.disagree.

        Traces are only ever added, so the set stays right until the largest trace id changes: an annotator
        stepping through the queue pays for it once. It is exactly the questions where both models have traces
        and their predictions together take more than one value: one pass over two covering-index ranges
        instead of a join over all pairs of traces.
        """
        key = (a.name, a.iteration, b.name, b.iteration,
               self._one("SELECT MAX(id) AS n FROM traces")["n"])
        if getattr(self, "_disagree_key", None) == key:
            return
        in_a, pa = self._model_clause(a, "d")
        in_b, pb = self._model_clause(b, "d")
        self.db.execute("DROP TABLE IF EXISTS temp.disagree")
        self.db.execute("CREATE TEMP TABLE disagree (question_id TEXT PRIMARY KEY)")
        self.db.execute(
            f"""INSERT INTO temp.disagree
                SELECT question_id FROM (
                    SELECT d.question_id, d.predicted, 1 AS is_a, 0 AS is_b FROM traces d WHERE {in_a}
                    UNION ALL
                    SELECT d.question_id, d.predicted, 0, 1 FROM traces d WHERE {in_b})
                GROUP BY question_id
                HAVING COUNT(DISTINCT COALESCE(predicted, '')) > 1 AND MAX(is_a) = 1 AND MAX(is_b) = 1""",
            pa + pb,
        )
        self._disagree_key = key

    def next_unlabelled(self, model: str | None = None, iteration: int | None = None,
                        correct: bool | None = None, disagree: tuple[str, str] | None = None,
                        annotator: str | None = None, per_annotator: bool = False,
                        include_skipped: bool = False, overlap: int | None = None) -> StoredTrace | None:
        """The unlabelled trace with the lowest id that passes the filters, or None.

        `overlap` > 1 (several annotators per item): a trace stays in the queue until that many annotators have
        labelled it, and never comes back to one who already did (see agreement.overlap_clause).

        Unlabelled: no label in force from anyone, or, with `per_annotator`, from `annotator` (for double
        annotation). Traces `annotator` skipped are left out unless `include_skipped`. `disagree=(A, B)` keeps
        questions where models A and B (each `name` or `name@iteration`) predicted differently on some pair of
        their traces, and, unless `model` is given, traces of A or B only.
        """
        clauses: list[str] = []
        params: list[Any] = []
        if model is not None:
            clauses.append("t.model_id = ?")
            params.append(self._model_id(model))
        if iteration is not None:
            # Without a model, an iteration is no way into the id order the queue walks (the + says so to SQLite;
            # otherwise it picks the model-iteration index and sorts every match by id).
            clauses.append("t.iteration = ?" if model is not None else "+t.iteration = ?")
            params.append(check_iteration(iteration))
        if correct is not None:
            clauses.append("t.correct = ?")
            params.append(int(bool(correct)))
        if disagree is not None:
            known = set(self.models())
            # A model whose own name ends in @<digits> is taken whole; otherwise @<digits> picks an iteration.
            a, b = (s if isinstance(s, ModelSpec) else ModelSpec(s) if s in known else ModelSpec.parse(s)
                    for s in disagree)
            if (a.name, a.iteration) == (b.name, b.iteration):
                raise StoreError(f"disagreement needs two different models, got {a} twice")
            # The unary + keeps SQLite from driving the query by question or model (then sorting by id): the
            # queue wants the lowest id, so it walks traces in id order and stops at the first match.
            clauses.append("+t.question_id IN (SELECT question_id FROM temp.disagree)")
            self._fill_disagree(a, b)
            if model is None:
                ta, pta = self._model_clause(a, "+t")
                tb, ptb = self._model_clause(b, "+t")
                clauses.append(f"({ta} OR {tb})")
                params += pta + ptb
        if overlap is not None and overlap > 1:
            sql, extra = agreement_mod.overlap_clause(annotator, overlap)
            clauses.append(sql)
            params += extra
        elif per_annotator:
            if annotator is None:
                raise StoreError("per_annotator needs an annotator name")
            clauses.append("NOT EXISTS (SELECT 1 FROM current_labels l WHERE l.trace_id = t.id AND l.annotator = ?)")
            params.append(annotator)
        else:
            # Written as the partial indexes' own condition so that SQLite walks them (see schema 0002).
            clauses.append("t.n_current = 0")
        if annotator is not None and not include_skipped:
            clauses.append("NOT EXISTS (SELECT 1 FROM skips s WHERE s.trace_id = t.id AND s.annotator = ?)")
            params.append(annotator)
        sql = "SELECT t.id FROM traces t WHERE " + " AND ".join(clauses) + " ORDER BY t.id LIMIT 1"
        r = self._one(sql, params)
        return None if r is None else self.get_trace(r["id"])

    # ---- pairs ----------------------------------------------------------------------------------------------------

    def add_pairs(self, pairs: Iterable[Any], iteration: int | None, source: str = pairs_mod.SOURCES_AUTO) -> int:
        """Store pairs (Pair objects or dicts with prompt, chosen, rejected, stage, question_id, provenance)
        under `iteration` and `source`, in one transaction. A pair already stored is not stored twice.
        Returns how many were new."""
        if iteration is not None:
            check_iteration(iteration)
        check_name(source, "source")
        items = []
        for i, p in enumerate(pairs):
            items.append(replace(pairs_mod.read_pair(p, f"pair #{i}"), iteration=iteration, source=source))
        return self.store_pairs(items)

    def store_pairs(self, pairs: Iterable[pairs_mod.Pair], where: str = "pair") -> int:
        """Store pairs keeping each one's own iteration and source (what import_pairs uses)."""
        rows = []
        now = _now()
        for i, p in enumerate(pairs):
            pairs_mod.check_pair(p, f"{where} #{i}")
            rows.append({"key": p.key(), "prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
                         "stage": p.stage, "question_id": p.question_id, "iteration": p.iteration,
                         "source": p.source, "provenance": _dumps(p.provenance), "created_at": now})
        with self._write():
            before = self._one("SELECT COUNT(*) AS n FROM pairs")["n"]
            self.db["pairs"].insert_all(rows, batch_size=BATCH, ignore=True)
            after = self._one("SELECT COUNT(*) AS n FROM pairs")["n"]
        return after - before

    def pairs(self, source: str | None = None, iteration: int | None = None,
              stage: str | None = None) -> list[pairs_mod.Pair]:
        clauses, params = [], []
        for col, val in (("source", source), ("iteration", iteration), ("stage", stage)):
            if val is not None:
                clauses.append(f"{col} = ?")
                params.append(val)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        return [
            pairs_mod.Pair(prompt=r["prompt"], chosen=r["chosen"], rejected=r["rejected"], stage=r["stage"],
                           question_id=r["question_id"], iteration=r["iteration"], source=r["source"],
                           provenance=json.loads(r["provenance"]))
            for r in self.db.query("SELECT * FROM pairs" + where + " ORDER BY id", params)
        ]

    def curated_pairs(self, include_stored: bool = True) -> list[pairs_mod.Pair]:
        """Pairs from the labels in force now (see pairs.curated_pairs), plus, with `include_stored`, curated
        pairs imported from another store, each (stage, prompt, chosen, rejected) once."""
        by_trace: dict[int, list[Label]] = {}
        for lab in self.labels():
            by_trace.setdefault(lab.trace_id, []).append(lab)
        live = pairs_mod.curated_pairs((self.get_trace(tid), labs) for tid, labs in sorted(by_trace.items()))
        # Pairwise choices (1 / 2 in the pairwise mode) are curated pairs too.
        from tinythinker.store.pairwise import pairwise_pairs

        known = {(p.stage, p.prompt, p.chosen, p.rejected) for p in live}
        live += [p for p in pairwise_pairs(self) if (p.stage, p.prompt, p.chosen, p.rejected) not in known]
        if not include_stored:
            return live
        seen = {(p.stage, p.prompt, p.chosen, p.rejected) for p in live}
        extra = [p for p in self.pairs(source=pairs_mod.SOURCES_CURATED)
                 if (p.stage, p.prompt, p.chosen, p.rejected) not in seen]
        return live + extra

    # ---- export / import of datasets --------------------------------------------------------------------------------

    def export(self, out: str | os.PathLike, fmt: str = "jsonl", pairs: str = "curated",
               overwrite: bool = False) -> dict[str, Any]:
        from tinythinker.store.files import export_store

        return export_store(self, Path(out), fmt=fmt, which_pairs=pairs, overwrite=overwrite)

    def import_pairs(self, path: str | os.PathLike) -> int:
        from tinythinker.store.files import read_pairs

        path = Path(path)
        return self.store_pairs(read_pairs(path), where=str(path))

    # ---- stats ----------------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        by_model = list(self.db.query("""
            SELECT m.name AS model, t.iteration,
                   COUNT(*) AS traces,
                   SUM(t.correct = 1) AS correct, SUM(t.correct = 0) AS wrong, SUM(t.correct IS NULL) AS unknown,
                   SUM(t.n_current > 0) AS labelled
            FROM traces t JOIN models m ON m.id = t.model_id
            GROUP BY t.model_id, t.iteration ORDER BY m.name, t.iteration"""))
        for r in by_model:
            r["unlabelled"] = r["traces"] - r["labelled"]
        verdicts = list(self.db.query("""
            SELECT stage, verdict, COUNT(*) AS n, SUM(text IS NOT NULL) AS corrected
            FROM current_labels GROUP BY stage, verdict ORDER BY stage, verdict"""))
        annotators = {r["annotator"]: r["n"] for r in self.db.query(
            "SELECT annotator, COUNT(*) AS n FROM current_labels GROUP BY annotator ORDER BY annotator")}
        stored_pairs = {r["source"]: r["n"] for r in self.db.query(
            "SELECT source, COUNT(*) AS n FROM pairs GROUP BY source ORDER BY source")}
        count = lambda sql: self._one(sql)["n"]  # noqa: E731
        return {
            "db": str(self.path),
            "schema_version": self.schema_version,
            "traces": count("SELECT COUNT(*) AS n FROM traces"),
            # Copies of a trace stored before schema 0004 made traces unique (kept, with their labels).
            "legacy_duplicates": count("SELECT COUNT(*) AS n FROM traces WHERE content_key IS NULL"),
            "questions": count("SELECT COUNT(*) AS n FROM questions"),
            "models": len(self.models()),
            "by_model_iteration": by_model,
            "labels": {
                "in_force": count("SELECT COUNT(*) AS n FROM current_labels"),
                "undone": count("SELECT COUNT(*) AS n FROM undos"),
                "history": count("SELECT COUNT(*) AS n FROM labels"),
                "by_stage_verdict": verdicts,
                "annotators": annotators,
            },
            "skips": count("SELECT COUNT(*) AS n FROM skips"),
            "pairs": {"stored": stored_pairs, "curated_from_labels": len(self.curated_pairs(include_stored=False))},
        }
