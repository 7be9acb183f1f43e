"""Checks run before anything is written: each error names the field (and the file and line when there is one)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from tinythinker import stages
from tinythinker.types import Question, Trace

VERDICTS = ("good", "bad", "unsure")
# A stage text is a sentence or a paragraph; 10,000 characters is far past any real recall, analysis or summary
# (max_new_tokens keeps students well under it) while a pasted file or a runaway generation is caught.
MAX_TEXT_CHARS = 10_000
# A summarize prompt holds the question, the recall and every option's analysis.
MAX_PROMPT_CHARS = 50_000
MAX_NAME_CHARS = 200
# C0 controls other than tab / newline / carriage return, and DEL: a NUL cuts C strings (tokenizers, sqlite's
# own text functions) and the others are never part of real text. Every other code point, emoji and
# right-to-left scripts included, is kept exactly.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class StoreError(ValueError):
    """Bad input or a state the store refuses; the message says which file, line, field or id."""


def check_text(value: Any, field: str, *, limit: int = MAX_TEXT_CHARS, where: str = "",
               empty_ok: bool = True) -> str:
    prefix = f"{where}: " if where else ""
    if not isinstance(value, str):
        raise StoreError(f"{prefix}field {field!r} must be text, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise StoreError(f"{prefix}field {field!r} is empty")
    if len(value) > limit:
        raise StoreError(f"{prefix}field {field!r} is {len(value):,} characters long; the limit is {limit:,}")
    bad = _CONTROL.search(value)
    if bad:
        raise StoreError(
            f"{prefix}field {field!r} contains the control character U+{ord(bad.group()):04X} at position "
            f"{bad.start()}; remove it"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise StoreError(
            f"{prefix}field {field!r} is not valid Unicode (lone surrogate U+{ord(value[e.start]):04X} at "
            f"position {e.start})"
        ) from None
    return value


def check_name(value: Any, field: str, where: str = "") -> str:
    return check_text(value, field, limit=MAX_NAME_CHARS, where=where, empty_ok=False).strip()


def check_stage(stage: Any, where: str = "") -> str:
    if stage not in stages.STAGES:
        prefix = f"{where}: " if where else ""
        raise StoreError(f"{prefix}unknown stage {stage!r}; choose one of {', '.join(stages.STAGES)}")
    return stage


def check_verdict(verdict: Any) -> str:
    if verdict not in VERDICTS:
        raise StoreError(f"unknown verdict {verdict!r}; choose one of {', '.join(VERDICTS)}")
    return verdict


# SQLite integers are 64-bit: a larger id or iteration cannot be stored or looked up (Python would raise
# OverflowError deep in sqlite3), so it is refused here, in words.
MAX_INT = 2**63 - 1


def check_iteration(value: Any, where: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        prefix = f"{where}: " if where else ""
        raise StoreError(f"{prefix}iteration must be a whole number from 0 to {MAX_INT}, got {value!r}")
    return value


def check_sample_index(sampling: Any, where: str) -> int | None:
    """`sampling.sample_index` (which sample of a question this is), stored in its own column: absent or null,
    else a whole number in SQLite's range."""
    value = sampling.get("sample_index") if isinstance(sampling, dict) else None
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT):
        raise StoreError(f"{where}: field 'sampling.sample_index' must be a whole number >= 0, got {value!r}")
    return value


def to_json(value: Any, field: str, where: str) -> str:
    """The JSON text stored for a field; NaN, infinities and objects JSON cannot hold are refused."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{where}: field {field!r} is not plain JSON ({e})") from None


def check_question(q: Question, where: str) -> None:
    check_name(q.id, "question.id", where)
    check_text(q.stem, "question.stem", where=where, empty_ok=False)
    if not isinstance(q.options, list) or len(q.options) < 2:
        raise StoreError(f"{where}: field 'question.options' needs a list of at least two options")
    labels = []
    for i, o in enumerate(q.options):
        if not (isinstance(o.label, str) and re.fullmatch(r"[A-Z]", o.label)):
            raise StoreError(f"{where}: field 'question.options[{i}].label' must be one letter A-Z, got {o.label!r}")
        check_text(o.text, f"question.options[{i}].text", where=where)
        labels.append(o.label)
    if len(set(labels)) != len(labels):
        raise StoreError(f"{where}: field 'question.options' repeats a label: {labels}")
    if q.answer is not None and q.answer not in labels:
        raise StoreError(f"{where}: field 'question.answer' is {q.answer!r}, not one of the options {labels}")
    check_text(q.source, "question.source", where=where, limit=MAX_NAME_CHARS)


def check_trace(t: Trace, where: str) -> None:
    """The trace's own fields (its question is checked by check_question); JSON fields by to_json."""
    labels = t.question.labels
    try:
        stages.stages_of(t.stage_type)
    except ValueError as e:
        raise StoreError(f"{where}: field 'stage_type': {e}") from None
    if t.recall is not None:
        check_text(t.recall, "recall", where=where)
    if not isinstance(t.analyses, dict):
        raise StoreError(f"{where}: field 'analyses' must be an object of option label -> text")
    for label, text in t.analyses.items():
        if label not in labels:
            raise StoreError(f"{where}: field 'analyses' has option {label!r}, not one of {labels}")
        check_text(text, f"analyses.{label}", where=where)
    check_text(t.summary, "summary", where=where)
    if t.predicted is not None and t.predicted not in labels:
        raise StoreError(f"{where}: field 'predicted' is {t.predicted!r}, not one of the options {labels}")
    if t.correct is not None and not isinstance(t.correct, bool):
        raise StoreError(f"{where}: field 'correct' must be true, false or null, got {t.correct!r}")
    for k, v in t.stage_timings.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise StoreError(f"{where}: field 'stage_timings.{k}' must be a number of seconds, got {v!r}")
    check_text(t.model, "model", where=where, limit=MAX_NAME_CHARS)
