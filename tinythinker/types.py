"""The core types every layer shares: plain dataclasses that round-trip through JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Option:
    label: str
    text: str


@dataclass
class Question:
    id: str
    stem: str
    options: list[Option]
    answer: str | None
    source: str = ""
    # Benchmark extras the stages never read (OBQA fact1, StrategyQA facts/decomposition, ...).
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return [o.label for o in self.options]

    def option_text(self, label: str) -> str:
        for o in self.options:
            if o.label == label:
                return o.text
        raise KeyError(f"question {self.id!r} has no option {label!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Question:
        return cls(
            id=str(d["id"]),
            stem=d["stem"],
            options=[Option(**o) for o in d["options"]],
            answer=d.get("answer"),
            source=d.get("source", ""),
            meta=dict(d.get("meta") or {}),
        )


@dataclass
class Rationale:
    """Teacher knowledge for one question: a recall text and one explanation per option label."""

    recall: str | None
    analyses: dict[str, str]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rationale:
        return cls(
            recall=d.get("recall"),
            analyses=dict(d.get("analyses") or {}),
            source=d.get("source", ""),
            meta=dict(d.get("meta") or {}),
        )


@dataclass
class Trace:
    """One run of the staged pipeline on one question."""

    question: Question
    recall: str | None
    analyses: dict[str, str]
    summary: str
    predicted: str | None
    correct: bool | None
    stage_timings: dict[str, float] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)
    stage_type: str = "recall_analyze_summarize"
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        return cls(
            question=Question.from_dict(d["question"]),
            recall=d.get("recall"),
            analyses=dict(d.get("analyses") or {}),
            summary=d.get("summary", ""),
            predicted=d.get("predicted"),
            correct=d.get("correct"),
            stage_timings=dict(d.get("stage_timings") or {}),
            sampling=dict(d.get("sampling") or {}),
            stage_type=d.get("stage_type", "recall_analyze_summarize"),
            model=d.get("model", ""),
        )
