"""Two checkpoints on the same questions: word-level differences, flips, and traces cached on disk.

Traces of a (checkpoint, split) pair are cached as JSONL under the checkpoint's run folder
(`<run>/traces/<checkpoint>__<benchmark>-<split>-<n>.jsonl`) so comparing two models over a whole split opens
in well under a second once each has been run once.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from pathlib import Path

from tinythinker.types import Question, Trace

TRACES = "traces"
RIGHT_TO_WRONG, WRONG_TO_RIGHT, BOTH_WRONG = "right->wrong", "wrong->right", "both wrong"
FLIP_KINDS = (RIGHT_TO_WRONG, WRONG_TO_RIGHT, BOTH_WRONG)


def word_diff(a: str, b: str) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
    """Each text as (word, tag) spans where tag is "-" (only in a), "+" (only in b) or None (shared)."""
    wa, wb = (a or "").split(), (b or "").split()
    left: list[tuple[str, str | None]] = []
    right: list[tuple[str, str | None]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        if op == "equal":
            left.append((" ".join(wa[i1:i2]) + " ", None))
            right.append((" ".join(wb[j1:j2]) + " ", None))
            continue
        if i2 > i1:
            left.append((" ".join(wa[i1:i2]) + " ", "-"))
        if j2 > j1:
            right.append((" ".join(wb[j1:j2]) + " ", "+"))
    return left, right


def flip_kind(a: Trace, b: Trace) -> str | None:
    """How the verdict moves from model a to model b; None when both are right."""
    if a.correct and not b.correct:
        return RIGHT_TO_WRONG
    if not a.correct and b.correct:
        return WRONG_TO_RIGHT
    if not a.correct and not b.correct:
        return BOTH_WRONG
    return None


def disagreements(traces_a: list[Trace], traces_b: list[Trace], kinds=FLIP_KINDS) -> list[dict]:
    """One row per question (present in both) whose verdict is not right-for-both, in a's order."""
    by_id = {t.question.id: t for t in traces_b}
    rows = []
    for a in traces_a:
        b = by_id.get(a.question.id)
        if b is None:
            continue
        kind = flip_kind(a, b)
        if kind is None or kind not in kinds:
            continue
        rows.append({
            "id": a.question.id,
            "kind": kind,
            "answer": a.question.answer or "",
            "a": a.predicted or "invalid",
            "b": b.predicted or "invalid",
            "same answer": a.predicted == b.predicted,
            "question": a.question.stem,
        })
    return rows


def flip_counts(traces_a: list[Trace], traces_b: list[Trace]) -> dict[str, int]:
    """Counts of every verdict pair, "both right" included, over the questions both models answered."""
    counts = {"both right": 0, RIGHT_TO_WRONG: 0, WRONG_TO_RIGHT: 0, BOTH_WRONG: 0}
    by_id = {t.question.id: t for t in traces_b}
    for a in traces_a:
        b = by_id.get(a.question.id)
        if b is not None:
            counts[flip_kind(a, b) or "both right"] += 1
    return counts


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def cache_path(checkpoint: str | Path, runs_dir: str | Path, benchmark: str, split: str,
               questions: list[Question]) -> Path:
    """Where the traces of `checkpoint` on these questions are cached.

    Inside runs_dir: under the checkpoint's top-level run folder. A named student (not a folder) gets
    runs_dir/_students/. The file name carries a hash of the ordered question ids, so another slice of the
    split never reuses the wrong cache."""
    runs_dir = Path(runs_dir).resolve()
    path = Path(checkpoint)
    ids = hashlib.sha1("\n".join(q.id for q in questions).encode()).hexdigest()[:10]
    if path.is_dir() and path.resolve().is_relative_to(runs_dir):
        rel = path.resolve().relative_to(runs_dir)
        run_folder, name = runs_dir / rel.parts[0], _slug("__".join(rel.parts[1:]) or "model")
    else:
        run_folder, name = runs_dir / "_students", _slug(str(checkpoint))
    return run_folder / TRACES / f"{name}__{benchmark}-{split}-{len(questions)}-{ids}.jsonl"


def _fresh(cache: Path, checkpoint: str | Path) -> bool:
    if not cache.is_file():
        return False
    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        return True
    # A checkpoint rewritten after the cache (best/ replaced by a better step) makes the cache stale.
    newest = max((p.stat().st_mtime for p in ckpt.iterdir() if p.is_file()), default=0.0)
    return cache.stat().st_mtime >= newest


def cached_traces(student_loader, checkpoint: str | Path, questions: list[Question], cache: Path,
                  batch_size: int = 16, on_progress=None) -> list[Trace]:
    """Greedy full-pipeline traces of `checkpoint` on `questions`, from the cache when it is fresh.

    `student_loader(checkpoint)` is only called on a cache miss, so a cached comparison loads no model."""
    # Imported here: the pipeline pulls in torch and transformers, which the app loads after it starts serving.
    from tinythinker.pipeline import read_traces, run_pipeline, write_traces

    cache = Path(cache)
    if _fresh(cache, checkpoint):
        return read_traces(cache)
    student = student_loader(checkpoint)
    traces = run_pipeline(student, questions, batch_size=batch_size, on_progress=on_progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    write_traces(tmp, traces)
    os.replace(tmp, cache)  # a reader never sees half a cache
    return traces
