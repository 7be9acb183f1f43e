"""One-file JSONL downloads of the store: every trace (with its label history), every label, the pairs.

Unlike `export` (a folder with a manifest), each download is one JSONL file. The traces file has the shape of an
export's traces.jsonl, so `store import` reads it back with its labels; the pairs file has the shape of an export's
pairs.jsonl (`store import-pairs`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tinythinker.store.files import select_pairs

KINDS = ("traces", "labels", "pairs")


def write_jsonl(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write beside the target and rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def trace_rows(store) -> list[dict[str, Any]]:
    labels: dict[int, list[dict[str, Any]]] = {}
    for lab in store.labels(include_undone=True):
        labels.setdefault(lab.trace_id, []).append(lab.to_dict())
    return [{**st.trace.to_dict(), "store": {"id": st.id, "model": st.model, "iteration": st.iteration,
                                             "labels": labels.get(st.id, [])}}
            for st in store.iter_traces("all")]


def label_rows(store) -> list[dict[str, Any]]:
    """Every label ever made (undone ones marked), with the question, model and iteration of its trace."""
    where = {r["id"]: r for r in store.db.query(
        "SELECT t.id, t.question_id, m.name AS model, t.iteration FROM traces t JOIN models m ON m.id = t.model_id "
        "WHERE EXISTS (SELECT 1 FROM labels l WHERE l.trace_id = t.id)")}
    out = []
    for lab in store.labels(include_undone=True):
        t = where.get(lab.trace_id, {})
        out.append({**lab.to_dict(), "question_id": t.get("question_id"), "model": t.get("model"),
                    "iteration": t.get("iteration")})
    return out


def pair_rows(store, which: str = "curated") -> list[dict[str, Any]]:
    return [p.to_dict() for p in select_pairs(store, which)]


def download(store, kind: str, folder: str | os.PathLike, which_pairs: str = "curated") -> Path:
    """Write one download (`traces`, `labels` or `pairs`) as `<folder>/<kind>.jsonl`; returns its path."""
    if kind not in KINDS:
        raise ValueError(f"unknown download {kind!r}; choose one of {', '.join(KINDS)}")
    rows = {"traces": trace_rows, "labels": label_rows}.get(kind)
    data = rows(store) if rows else pair_rows(store, which_pairs)
    return write_jsonl(Path(folder) / f"{kind}.jsonl", data)
