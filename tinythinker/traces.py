"""Traces JSONL: one `Trace` per line. Torch-free, so the app's first page and the store can read the cached
traces without loading a model stack."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tinythinker.types import Question, Trace

T = TypeVar("T")


def write_traces(path: str | Path, traces: list[Trace]) -> Path:
    """One JSON Trace per line, written to a temporary file first so that a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for t in traces:
                f.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def parse_lines(path: str | Path, parse: Callable[[dict], T]) -> list[T]:
    """`parse` applied to each non-blank JSON line; a ValueError names the file and line of one that is not
    valid JSON or not what `parse` expects."""
    path = Path(path)
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(parse(json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
            except (KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{path}, line {n}: not a trace (missing or malformed field {e})") from None
    return out


def read_traces(path: str | Path) -> list[Trace]:
    return parse_lines(path, Trace.from_dict)


def trace_questions(path: str | Path) -> list[Question]:
    """The questions of a traces file, in order, each once (only the `question` of each line is parsed)."""
    seen: dict[str, Question] = {}
    for q in parse_lines(path, lambda d: Question.from_dict(d["question"])):
        seen.setdefault(q.id, q)
    return list(seen.values())
