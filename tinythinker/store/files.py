"""Files in and out of the store: JSONL of traces, and exports as JSONL or `datasets.Dataset` folders.

An export folder holds `pairs` (the preference pairs phase 2 reads), `traces` (the labelled traces, each with its
label history) and `manifest.json`. Both formats read back: `store import` takes the traces (labels included) and
`store import-pairs` the pairs. The folder appears complete or not at all: it is written beside its final place and
renamed into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinythinker.store.pairs import SOURCES_CURATED, Pair
from tinythinker.store.validate import StoreError
from tinythinker.types import Trace

if TYPE_CHECKING:
    from tinythinker.store.core import ImportRecord, Store

FORMATS = ("jsonl", "hf")
PAIR_SELECTIONS = ("curated", "auto", "all")


def file_sha256(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else "").encode())
        with open(p, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def _is_dataset_dir(path: Path) -> bool:
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, object) per non-blank line; a bad line raises a StoreError naming the file and line."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            where = f"{path} line {n}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise StoreError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise StoreError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise StoreError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, obj


def _load_dataset_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    from datasets import load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as e:  # datasets raises several kinds for a folder that is not a saved Dataset
        raise StoreError(f"{path}: not a saved datasets.Dataset ({e})") from None
    for i, row in enumerate(ds):
        yield f"{path} row {i}", row


def trace_from_dict(d: dict[str, Any], where: str) -> Trace:
    try:
        return Trace.from_dict(d)
    except KeyError as e:
        raise StoreError(f"{where}: missing field {e.args[0]!r}") from None
    except (TypeError, AttributeError, ValueError) as e:
        raise StoreError(f"{where}: not a trace ({e})") from None


def _record(where: str, d: dict[str, Any]) -> ImportRecord:
    from tinythinker.store.core import ImportRecord

    meta = d.get("store")
    if meta is not None and not isinstance(meta, dict):
        raise StoreError(f"{where}: field 'store' must be an object")
    meta = meta or {}
    labels = meta.get("labels")
    if labels is not None and not isinstance(labels, list):
        raise StoreError(f"{where}: field 'store.labels' must be a list")
    return ImportRecord(where=where, trace=trace_from_dict(d, where), model=meta.get("model"),
                        iteration=meta.get("iteration"), labels=labels)


def read_trace_records(path: Path) -> Iterator[ImportRecord]:
    """Traces from a JSONL file, an export folder, or a saved Dataset of an export's traces."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "traces.jsonl").is_file():
            path = path / "traces.jsonl"
        elif _is_dataset_dir(path / "traces"):
            path = path / "traces"
        elif not _is_dataset_dir(path):
            raise StoreError(f"{path}: a folder without traces.jsonl or a saved traces dataset")
    if path.is_dir():
        for where, row in _load_dataset_rows(path):
            try:
                d = json.loads(row["trace"])
                d["store"] = {"model": row["model"], "iteration": row["iteration"],
                              "labels": json.loads(row["labels"])}
            except (KeyError, TypeError, json.JSONDecodeError) as e:
                raise StoreError(f"{where}: not a trace export row ({e})") from None
            yield _record(where, d)
    else:
        for where, d in read_jsonl(path):
            yield _record(where, d)


def read_pairs(path: Path) -> Iterator[Pair]:
    """Pairs from a JSONL file, an export folder, or a saved Dataset of pairs."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "pairs.jsonl").is_file():
            path = path / "pairs.jsonl"
        elif _is_dataset_dir(path / "pairs"):
            path = path / "pairs"
        elif not _is_dataset_dir(path):
            raise StoreError(f"{path}: a folder without pairs.jsonl or a saved pairs dataset")
    rows = _load_dataset_rows(path) if path.is_dir() else read_jsonl(path)
    for where, d in rows:
        yield Pair.from_dict(d, where)


# ---- export ----------------------------------------------------------------------------------------------------


def _pair_features():
    from datasets import Features, Value

    return Features({"prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string"),
                     "stage": Value("string"), "question_id": Value("string"), "iteration": Value("int64"),
                     "source": Value("string"), "provenance": Value("string")})


def _trace_features():
    from datasets import Features, Value

    return Features({"store_id": Value("int64"), "model": Value("string"), "iteration": Value("int64"),
                     "question_id": Value("string"), "stage_type": Value("string"), "predicted": Value("string"),
                     "correct": Value("bool"), "trace": Value("string"), "labels": Value("string")})


def _columns(rows: list[dict[str, Any]], features) -> dict[str, list]:
    return {name: [r[name] for r in rows] for name in features}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def select_pairs(store: Store, which: str) -> list[Pair]:
    if which not in PAIR_SELECTIONS:
        raise StoreError(f"unknown pair selection {which!r}; choose one of {', '.join(PAIR_SELECTIONS)}")
    if which == "curated":
        return store.curated_pairs()
    if which == "auto":
        return store.pairs(source="auto")
    return store.curated_pairs() + [p for p in store.pairs() if p.source != SOURCES_CURATED]


def export_store(store: Store, out: Path, fmt: str = "jsonl", which_pairs: str = "curated",
                 overwrite: bool = False) -> dict[str, Any]:
    if fmt not in FORMATS:
        raise StoreError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        raise StoreError(f"export target {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise StoreError(f"export folder {out} is not empty; pass --overwrite to replace it")
    pairs = select_pairs(store, which_pairs)
    label_rows: dict[int, list[dict[str, Any]]] = {}
    for lab in store.labels(include_undone=True):
        label_rows.setdefault(lab.trace_id, []).append(lab.to_dict())
    # Every trace with a label row, undone ones included, so that the whole history travels.
    traces = list(store.iter_traces("with_history"))

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        pair_rows = [p.to_dict() for p in pairs]
        trace_lines = [{**st.trace.to_dict(), "store": {
            "id": st.id, "model": st.model, "iteration": st.iteration, "labels": label_rows[st.id]}}
            for st in traces]
        if fmt == "jsonl":
            _write_jsonl(tmp / "pairs.jsonl", pair_rows)
            _write_jsonl(tmp / "traces.jsonl", trace_lines)
            files = ["pairs.jsonl", "traces.jsonl"]
        else:
            import datasets
            from datasets import Dataset

            bars = datasets.is_progress_bar_enabled()
            datasets.disable_progress_bars()  # a few hundred rows; the bars would only clutter the CLI
            try:
                flat_pairs = [{**r, "provenance": json.dumps(r["provenance"], ensure_ascii=False)}
                              for r in pair_rows]
                Dataset.from_dict(_columns(flat_pairs, _pair_features()), features=_pair_features()) \
                    .save_to_disk(str(tmp / "pairs"))
                flat_traces = [{
                    "store_id": st.id, "model": st.model, "iteration": st.iteration,
                    "question_id": st.trace.question.id, "stage_type": st.trace.stage_type,
                    "predicted": st.trace.predicted, "correct": st.trace.correct,
                    "trace": json.dumps(st.trace.to_dict(), ensure_ascii=False),
                    "labels": json.dumps(label_rows[st.id], ensure_ascii=False)} for st in traces]
                Dataset.from_dict(_columns(flat_traces, _trace_features()), features=_trace_features()) \
                    .save_to_disk(str(tmp / "traces"))
            finally:
                if bars:
                    datasets.enable_progress_bars()
            files = ["pairs", "traces"]
        manifest = {
            "format": fmt, "db": str(store.path), "schema_version": store.schema_version,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "pair_selection": which_pairs, "pairs": len(pairs), "traces": len(traces),
            "labels": sum(len(v) for v in label_rows.values()), "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
