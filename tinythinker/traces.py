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


def parse_lines(path: str | Path, parse: Callable[[dict], T], with_line: bool = False) -> list[T]:
    """`parse` applied to each non-blank JSON line (as `(line number, parsed)` with `with_line`); a ValueError
    names the file and line of one that is not valid JSON or not what `parse` expects."""
    path = Path(path)
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                parsed = parse(json.loads(line))
                out.append((n, parsed) if with_line else parsed)
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


def traces_to_resume(path: str | Path, questions: list[Question], model: str, stage_type: str,
                     sampling: dict, num_samples: int,
                     check: Callable[[Trace], str | None] | None = None) -> list[Trace]:
    """The traces of `path` an interrupted evaluation can keep: every question of `questions` that has all its
    `num_samples` traces there (a question with fewer is run again). A line written by another model, stage type
    or sampling (`Trace.sampling` without its `sample_index`), or about a question outside `questions`, is a
    ValueError naming the file and line: resuming would mix two runs, or rewrite the file without that line.
    `check(trace)`, if given, returns why a kept trace does not belong to this run (also a ValueError), or None."""
    path = Path(path)
    wanted = {q.id for q in questions}
    by_question: dict[str, list[tuple[int, Trace]]] = {}
    for line, t in parse_lines(path, Trace.from_dict, with_line=True):
        settings = {k: v for k, v in t.sampling.items() if k != "sample_index"}
        for name, have, want in (("model", t.model, model), ("stage type", t.stage_type, stage_type),
                                 ("sampling", settings, sampling)):
            if have != want:
                raise ValueError(f"{path}, line {line}: its {name} is {have!r}, this run's is {want!r}; resume "
                                 "with the flags that wrote it, or give another --out")
        if t.question.id not in wanted:
            raise ValueError(f"{path}, line {line}: question {t.question.id} is not among this run's "
                             f"{len(questions)} questions (another --limit, --split-seed or --unseen-by?); "
                             "resuming would drop it, so give another --out")
        by_question.setdefault(t.question.id, []).append((line, t))
    kept = [lt for lts in by_question.values() if len(lts) == num_samples for lt in lts]
    for line, t in kept if check is not None else []:
        reason = check(t)
        if reason:
            raise ValueError(f"{path}, line {line}: {reason}; give another --out")
    return [t for _, t in kept]
