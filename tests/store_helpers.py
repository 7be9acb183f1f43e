"""Small traces for the store tests, built by hand (no model, no data files)."""

from __future__ import annotations

import json
from pathlib import Path

from tinythinker.types import Option, Question, Trace

LABELS = "ABC"


def question(qid: str = "q1", stem: str = "Where do people keep money?", answer: str = "A") -> Question:
    return Question(id=qid, stem=stem, options=[Option("A", "bank"), Option("B", "river"), Option("C", "shoe")],
                    answer=answer, source="test")


def trace(qid: str = "q1", predicted: str | None = "A", recall: str | None = None, tag: str = "",
          stage_type: str = "recall_analyze_summarize", model: str = "", q: Question | None = None) -> Trace:
    q = q or question(qid)
    return Trace(
        question=q,
        recall=(recall if recall is not None else f"Banks hold money{tag}.") if "recall" in stage_type else None,
        analyses={lab: f"option {lab} explained{tag}" for lab in LABELS} if "analyze" in stage_type else {},
        summary=f"So the answer is option {predicted}." if predicted else "no answer",
        predicted=predicted, correct=None if predicted is None else predicted == q.answer,
        stage_timings={"recall": 0.1, "analyze": 0.2, "summarize": 0.05},
        sampling={"recall": {"do_sample": True, "temperature": 0.7}, "sample_index": 0},
        stage_type=stage_type, model=model,
    )


def write_jsonl(path: Path, traces: list[Trace]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for t in traces:
            f.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
    return path


def counts(store) -> dict[str, int]:
    """Rows in every table: what 'nothing written' is checked against."""
    return {t: store.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("questions", "models", "imports", "traces", "labels", "undos", "skips", "pairs")}
