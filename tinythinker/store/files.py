"""Files in and out of the store: JSONL of traces, and exports as JSONL or `datasets.Dataset` folders.

An export folder holds `pairs` (the preference pairs phase 2 reads), `traces` (the labelled traces, each with its
label history), `manifest.json` and a dataset card, `README.md` (`tinythinker.store.card`: provenance and pair checks;
`tinythinker.store.hub` pushes a datasets-format export with it). Both formats read back: `store import` takes the
traces (labels included) and `store import-pairs` the pairs. The folder appears complete or not at all: it is written
beside its final place and renamed into it.
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

from tinythinker.data.records import BOM, RepeatedKeyError, describe_path, json_error, loads
from tinythinker.pair_checks import check_pairs
from tinythinker.store import card
from tinythinker.store.pairs import SOURCES_CURATED, Pair, read_pair
from tinythinker.store.validate import StoreError
from tinythinker.types import Trace

if TYPE_CHECKING:
    from tinythinker.store.core import ImportRecord, Store

FORMATS = ("jsonl", "hf")
PAIR_SELECTIONS = ("curated", "auto", "all")


def check_input_path(path: Path) -> None:
    """A file or folder to read from must be there and be a regular file or a folder: reading a device or a named
    pipe (/dev/zero, a fifo) would never end, so it is refused before anything opens it."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if not (path.is_file() or path.is_dir()):
        raise StoreError(f"{path} is {describe_path(path)}, not a regular file or a folder; give a JSONL file or "
                         "an export folder")


def file_sha256(path: Path) -> str:
    check_input_path(path)
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
    check_input_path(path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            where = f"{path} line {n}"
            if n == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]  # a UTF-8 byte order mark, as Windows tools write: read past it
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise StoreError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
            if not text.strip():
                continue
            try:
                obj = loads(text)
            except json.JSONDecodeError as e:
                raise StoreError(f"{where}: not valid JSON ({json_error(e)})") from None
            except RepeatedKeyError as e:
                raise StoreError(f"{where}: field {e.path!r} appears twice in one JSON object; only one value could "
                                 "be kept, so the line is refused rather than a value dropped") from None
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


_NULL = type(None)
# field -> (the JSON types it may hold, whether it must be there). Checked before Trace.from_dict so that a wrong
# type is named by its field, not by the Python error it would cause; values are checked by validate.check_trace.
TRACE_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "question": ((dict,), True), "summary": ((str,), True), "recall": ((str, _NULL), False),
    "analyses": ((dict, _NULL), False), "predicted": ((str, _NULL), False), "correct": ((bool, _NULL), False),
    "stage_timings": ((dict, _NULL), False), "sampling": ((dict, _NULL), False), "stage_type": ((str,), False),
    "model": ((str,), False),
}
QUESTION_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((str, int), True), "stem": ((str,), True), "options": ((list,), True), "answer": ((str, _NULL), False),
    "source": ((str,), False), "meta": ((dict, _NULL), False),
}
_JSON_TYPE = {str: "text", int: "a whole number", float: "a number", bool: "true or false", dict: "an object",
              list: "a list", _NULL: "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


def _check_fields(obj: dict[str, Any], fields: dict[str, tuple[tuple[type, ...], bool]], prefix: str,
                  where: str) -> None:
    for key, (kinds, required) in fields.items():
        name = prefix + key
        if key not in obj:
            if required:
                raise StoreError(f"{where}: missing field {name!r}")
            continue
        value = obj[key]
        # JSON true / false are Python bools, which are ints: `"id": true` is a mistake, not the id "True".
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            want = " or ".join(_JSON_TYPE[k] for k in kinds)
            raise StoreError(f"{where}: field {name!r} must be {want}, got {_json_type(value)}")


def check_trace_fields(d: dict[str, Any], where: str) -> None:
    """Presence and JSON type of every field a trace line may have (a summary is required: a trace without one
    is not a trace, and is not stored as an empty text)."""
    _check_fields(d, TRACE_FIELDS, "", where)
    q = d["question"]
    _check_fields(q, QUESTION_FIELDS, "question.", where)
    for i, o in enumerate(q["options"]):
        name = f"question.options[{i}]"
        if not isinstance(o, dict):
            raise StoreError(f"{where}: field {name!r} must be an object with 'label' and 'text', got {_json_type(o)}")
        _check_fields(o, {"label": ((str,), True), "text": ((str,), True)}, name + ".", where)
        extra = sorted(set(o) - {"label", "text"})
        if extra:
            raise StoreError(f"{where}: field {name!r} has keys other than 'label' and 'text': {extra}")


def trace_from_dict(d: dict[str, Any], where: str) -> Trace:
    check_trace_fields(d, where)
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
    _check_fields(meta, {"model": ((str, _NULL), False), "iteration": ((int, _NULL), False),
                         "labels": ((list, _NULL), False)}, "store.", where)
    labels = meta.get("labels")
    return ImportRecord(where=where, trace=trace_from_dict(d, where), model=meta.get("model"),
                        iteration=meta.get("iteration"), labels=labels)


def read_trace_records(path: Path) -> Iterator[ImportRecord]:
    """Traces from a JSONL file, an export folder, or a saved Dataset of an export's traces."""
    path = trace_source(path)
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


def trace_source(path: Path) -> Path:
    """The file or saved Dataset folder that `read_trace_records(path)` reads: only that is hashed and read."""
    check_input_path(path)
    if path.is_dir():
        if (path / "traces.jsonl").is_file():
            return path / "traces.jsonl"
        if _is_dataset_dir(path / "traces"):
            return path / "traces"
        if not _is_dataset_dir(path):
            raise StoreError(f"{path}: a folder without traces.jsonl or a saved traces dataset")
    return path


def read_pairs(path: Path) -> Iterator[Pair]:
    """Pairs from a JSONL file, an export folder, or a saved Dataset of pairs."""
    check_input_path(path)
    if path.is_dir():
        if (path / "pairs.jsonl").is_file():
            path = path / "pairs.jsonl"
        elif _is_dataset_dir(path / "pairs"):
            path = path / "pairs"
        elif not _is_dataset_dir(path):
            raise StoreError(f"{path}: a folder without pairs.jsonl or a saved pairs dataset")
    rows = _load_dataset_rows(path) if path.is_dir() else read_jsonl(path)
    for where, d in rows:
        yield read_pair(d, where)


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
        raise StoreError(f"export target {out} is {describe_path(out)}; give a folder")
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
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise _unwritable(out, e) from e
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
            # The pair checks as they stood at export (tinythinker.pair_checks), for the dataset card.
            "pair_checks": check_pairs(pairs, store=store).to_dict(),
            "provenance": card.provenance(pairs, traces),
            "card": card.CARD,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (tmp / card.CARD).write_text(card.dataset_card(manifest, out.name), encoding="utf-8")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            try:
                tmp.rename(out)
            except BaseException:
                old.rename(out)  # the previous export stays where it was
                raise
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise _unwritable(out, e) from e
        raise
    return manifest


def _unwritable(out: Path, e: OSError) -> StoreError:
    """An export that cannot be written (a read-only folder, a full disk, a parent that is a file), in one line."""
    what = e.strerror or str(e)
    at = f" ({e.filename})" if e.filename else ""
    return StoreError(f"cannot write the export {out}: {what}{at}; nothing was written there")
