"""The store's schema, created and migrated by code (sqlite-utils `Migrations`).

Each migration is a function that runs once, in the transaction that records it; `SCHEMA_VERSION` is the number of
migrations and is mirrored in `PRAGMA user_version` so that any SQLite tool can read it. A database written by a
newer version of this code (a migration name this code does not know) is refused rather than guessed at.

Tables:
    questions  one row a question (id from the benchmark), options as JSON
    models     one row a model name (a run folder, a checkpoint, a hub id)
    imports    one row an import: its source file, content hash, model, iteration, trace count
    traces     one row a pipeline run on a question: every stage's text, sampling, prediction, timings, and
               content_key, its identity hash (identity.py), unique: a trace is stored once
    labels     one row a label; append-only: a later label adds a row, it never updates one
    undos      one row an undone label (points at it); undo appends here, history stays whole
    skips      one row a trace an annotator skipped
    pairs      stored preference pairs (phase 2's automatic ones, or imported ones) with provenance
    guidelines one row a version of the labelling guideline (the latest is in force)
    settings   one row a setting (the annotation overlap, ...), its value as JSON
    pair_choices  one row a pairwise choice (1 / 2 / = / s) between two traces' texts for one stage
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

MIGRATIONS = Migrations("tinythinker.store")
_NAMES: list[str] = []


def _migration(name: str):
    _NAMES.append(name)
    return MIGRATIONS(name=name)


def _strict(db: sqlite_utils.Database) -> bool:
    # STRICT tables make SQLite itself reject a value of the wrong type, a second line behind our validation.
    return db.supports_strict


@_migration("0001_initial")
def _initial(db: sqlite_utils.Database) -> None:
    strict = _strict(db)
    db["questions"].create(
        {"id": str, "stem": str, "options": str, "answer": str, "source": str, "meta": str},
        pk="id", not_null=["stem", "options"], strict=strict,
    )
    db["models"].create(
        {"id": int, "name": str, "created_at": str},
        pk="id", not_null=["name", "created_at"], strict=strict,
    )
    db["models"].create_index(["name"], unique=True)
    db["imports"].create(
        {"id": int, "source": str, "sha256": str, "model_id": int, "iteration": int, "n_traces": int,
         "created_at": str},
        pk="id", foreign_keys=[("model_id", "models", "id")], not_null=["created_at"], strict=strict,
    )
    db["imports"].create_index(["sha256", "model_id", "iteration"])
    db["traces"].create(
        {
            "id": int, "question_id": str, "model_id": int, "iteration": int, "import_id": int,
            "stage_type": str, "recall": str, "analyses": str, "summary": str, "predicted": str,
            "correct": int, "stage_timings": str, "sampling": str, "sample_index": int, "created_at": str,
        },
        pk="id",
        foreign_keys=[("question_id", "questions", "id"), ("model_id", "models", "id"),
                      ("import_id", "imports", "id")],
        not_null=["question_id", "model_id", "iteration", "stage_type", "analyses", "summary", "created_at"],
        strict=strict,
    )
    # The queue serves the lowest id first: with these two, a model (and iteration) filter walks its traces in
    # id order and reads correctness from the index, so `next` stops at the first unlabelled match, no sort.
    db["traces"].create_index(["model_id", "iteration", "id", "correct"])
    db["traces"].create_index(["model_id", "id", "correct"])
    # Disagreement between two models groups their traces by question.
    db["traces"].create_index(["model_id", "iteration", "question_id", "predicted"])
    db["traces"].create_index(["question_id"])
    db["labels"].create(
        {"id": int, "trace_id": int, "stage": str, "option": str, "verdict": str, "text": str, "note": str,
         "annotator": str, "created_at": str},
        pk="id", foreign_keys=[("trace_id", "traces", "id")],
        not_null=["trace_id", "stage", "verdict", "annotator", "created_at"], strict=strict,
    )
    db["labels"].create_index(["trace_id", "annotator"])
    db["labels"].create_index(["annotator", "id"])
    db["undos"].create(
        {"id": int, "label_id": int, "annotator": str, "created_at": str},
        pk="id", foreign_keys=[("label_id", "labels", "id")],
        not_null=["label_id", "annotator", "created_at"], strict=strict,
    )
    db["undos"].create_index(["label_id"], unique=True)
    db["skips"].create(
        {"id": int, "trace_id": int, "annotator": str, "created_at": str},
        pk="id", foreign_keys=[("trace_id", "traces", "id")],
        not_null=["trace_id", "annotator", "created_at"], strict=strict,
    )
    db["skips"].create_index(["trace_id", "annotator"])
    db["pairs"].create(
        {"id": int, "key": str, "prompt": str, "chosen": str, "rejected": str, "stage": str,
         "question_id": str, "iteration": int, "source": str, "provenance": str, "created_at": str},
        pk="id", not_null=["key", "prompt", "chosen", "rejected", "stage", "source", "provenance", "created_at"],
        strict=strict,
    )
    # The key hashes (source, iteration, stage, prompt, chosen, rejected): storing the same pair twice is a no-op.
    db["pairs"].create_index(["key"], unique=True)
    db["pairs"].create_index(["source", "iteration"])
    # Labels that still count: not undone. Every reader of labels goes through this view.
    db.create_view(
        "current_labels",
        "SELECT l.* FROM labels l WHERE NOT EXISTS (SELECT 1 FROM undos u WHERE u.label_id = l.id)",
    )


@_migration("0002_label_counts")
def _label_counts(db: sqlite_utils.Database) -> None:
    """`traces.n_current`, the number of its labels in force, kept by triggers in the label's own transaction,
    so the queue reads 'unlabelled' from partial indexes of unlabelled traces instead of probing the labels of
    every labelled trace it passes: `next` stays flat however many labels there are. History tables refuse
    UPDATE and DELETE outright."""
    db["traces"].add_column("n_current", int, not_null_default=0)
    db.execute("UPDATE traces SET n_current = "
               "(SELECT COUNT(*) FROM current_labels l WHERE l.trace_id = traces.id)")
    db.executescript("""
        CREATE TRIGGER labels_count AFTER INSERT ON labels BEGIN
            UPDATE traces SET n_current = n_current + 1 WHERE id = NEW.trace_id;
        END;
        CREATE TRIGGER undos_count AFTER INSERT ON undos BEGIN
            UPDATE traces SET n_current = n_current - 1
            WHERE id = (SELECT trace_id FROM labels WHERE id = NEW.label_id);
        END;
        CREATE TRIGGER labels_no_update BEFORE UPDATE ON labels BEGIN
            SELECT RAISE(ABORT, 'labels are history: add a label or an undo instead of changing one');
        END;
        CREATE TRIGGER labels_no_delete BEFORE DELETE ON labels BEGIN
            SELECT RAISE(ABORT, 'labels are history: add an undo instead of deleting one');
        END;
        CREATE TRIGGER undos_no_update BEFORE UPDATE ON undos BEGIN
            SELECT RAISE(ABORT, 'undos are history and cannot change');
        END;
        CREATE TRIGGER undos_no_delete BEFORE DELETE ON undos BEGIN
            SELECT RAISE(ABORT, 'undos are history and cannot be deleted');
        END;
        CREATE INDEX traces_unlabelled ON traces (id, iteration, correct) WHERE n_current = 0;
        CREATE INDEX traces_unlabelled_model ON traces (model_id, id, correct) WHERE n_current = 0;
        CREATE INDEX traces_unlabelled_model_iteration ON traces (model_id, iteration, id, correct)
            WHERE n_current = 0;
        DROP INDEX idx_traces_question_id;
    """)


@_migration("0003_guideline_settings_pair_choices")
def _guideline_settings_pair_choices(db: sqlite_utils.Database) -> None:
    """The labelling guideline (each edit a new row; the latest is the one in force), settings such as the
    annotation overlap (key -> JSON value), and pairwise choices between two traces' texts for one stage
    (append-only like labels: a later choice by the same annotator on the same item supersedes the earlier)."""
    strict = _strict(db)
    db["guidelines"].create(
        {"id": int, "text": str, "author": str, "created_at": str},
        pk="id", not_null=["text", "author", "created_at"], strict=strict,
    )
    db["settings"].create(
        {"key": str, "value": str, "updated_by": str, "updated_at": str},
        pk="key", not_null=["value", "updated_at"], strict=strict,
    )
    db["pair_choices"].create(
        {"id": int, "question_id": str, "stage": str, "option": str, "first_trace_id": int,
         "second_trace_id": int, "choice": str, "annotator": str, "note": str, "created_at": str},
        pk="id",
        foreign_keys=[("question_id", "questions", "id"), ("first_trace_id", "traces", "id"),
                      ("second_trace_id", "traces", "id")],
        not_null=["question_id", "stage", "first_trace_id", "second_trace_id", "choice", "annotator",
                  "created_at"],
        strict=strict,
    )
    db["pair_choices"].create_index(["annotator", "id"])
    db["pair_choices"].create_index(["first_trace_id", "second_trace_id", "stage", "option"])
    db.executescript("""
        CREATE TRIGGER pair_choices_no_update BEFORE UPDATE ON pair_choices BEGIN
            SELECT RAISE(ABORT, 'pairwise choices are history: add a choice instead of changing one');
        END;
        CREATE TRIGGER pair_choices_no_delete BEFORE DELETE ON pair_choices BEGIN
            SELECT RAISE(ABORT, 'pairwise choices are history and cannot be deleted');
        END;
        CREATE TRIGGER guidelines_no_update BEFORE UPDATE ON guidelines BEGIN
            SELECT RAISE(ABORT, 'guideline versions are history: save a new version instead');
        END;
    """)


@_migration("0004_trace_identity")
def _trace_identity(db: sqlite_utils.Database) -> None:
    """`traces.content_key`: the trace's identity (identity.trace_key) under a unique index, so that the store
    holds each trace once however many files bring it. The rows already there are all kept, labels and all: the
    first trace of each identity gets its key; a later copy (a database that took the same traces twice before
    this migration) keeps NULL, which a unique index allows, and `stats()` counts those as `legacy_duplicates`."""
    import json

    from tinythinker.store.identity import trace_key

    db["traces"].add_column("content_key", str)
    seen: set[str] = set()
    first: list[tuple[str, int]] = []
    for r in db.query("""SELECT t.id, m.name AS model, t.iteration, t.question_id, t.stage_type, t.recall,
                                t.analyses, t.summary, t.predicted, t.sampling
                         FROM traces t JOIN models m ON m.id = t.model_id ORDER BY t.id"""):
        key = trace_key(r["model"], r["iteration"], r["question_id"], r["stage_type"], r["recall"],
                        json.loads(r["analyses"]), r["summary"], r["predicted"], json.loads(r["sampling"] or "{}"))
        if key not in seen:
            seen.add(key)
            first.append((key, r["id"]))
    db.conn.executemany("UPDATE traces SET content_key = ? WHERE id = ?", first)
    db.execute("CREATE UNIQUE INDEX traces_content_key ON traces (content_key)")


SCHEMA_VERSION = len(_NAMES)
KNOWN = set(_NAMES)


def migrate(db: sqlite_utils.Database, path: str) -> int:
    """Bring `db` to SCHEMA_VERSION; returns the version. Safe when several processes open a new file at once."""
    applied = {m.name for m in MIGRATIONS.applied(db)}
    unknown = applied - KNOWN
    if unknown:
        raise RuntimeError(
            f"database {path} has schema migrations this code does not know ({', '.join(sorted(unknown))}); "
            f"it was written by a newer tinythinker (this one reads schema version {SCHEMA_VERSION})"
        )
    if MIGRATIONS.pending(db):
        # BEGIN IMMEDIATE takes the write lock first, so two processes creating the same new file do not both
        # run the migrations: the second waits (busy timeout), then finds nothing pending.
        db.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS.apply(db)
            db.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")
            db.commit()
        except BaseException:
            db.rollback()
            raise
    return SCHEMA_VERSION
