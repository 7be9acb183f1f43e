"""Majority verdict, the label in force, and the choice of which rationales to keep (the paper's notebook:
`extract_answer_reasoning` and `select_candidate`)."""

from __future__ import annotations

import random
from collections import Counter
from typing import TypeVar

from rapidfuzz.distance import Levenshtein

from tinythinker.teacher.parse import ParsedAnswer

DISAGREEMENT_POLICIES = ("follow-teacher", "drop")
# The notebook's threshold: a recall counts as distinct when its edit distance to every other exceeds 10.
DIVERSITY_THRESHOLD = 10

T = TypeVar("T")


def majority_verdict(verdicts: list[str], gold: str) -> str:
    counts = Counter(verdicts)
    top = max(counts.values())
    tied = [label for label in counts if counts[label] == top]
    # Counter.most_common (the notebook) breaks a tie by first appearance; we let a tie stand with the gold
    # label, since the samples then give no majority against it.
    if gold in tied:
        return gold
    return tied[0]


def label_in_force(verdicts: list[str], gold: str, policy: str) -> tuple[str | None, str]:
    """Return (label, status). status: `agree`, `relabelled` (the teacher's majority replaces the gold label, as
    the notebook does) or `dropped_disagreement` (label None)."""
    if policy not in DISAGREEMENT_POLICIES:
        raise ValueError(f"unknown disagreement policy {policy!r}; choose one of {', '.join(DISAGREEMENT_POLICIES)}")
    majority = majority_verdict(verdicts, gold)
    if majority == gold:
        return gold, "agree"
    if policy == "follow-teacher":
        return majority, "relabelled"
    return None, "dropped_disagreement"


def select_diverse(candidates: list[T], recalls: list[str], keep: int, rng: random.Random) -> list[T]:
    """Keep up to `keep` candidates: first, in order, those whose recall differs from every other candidate's by
    more than DIVERSITY_THRESHOLD edits; then fill at random from the rest."""
    if keep <= 0:
        return []
    n = len(candidates)
    distinct = [
        i for i in range(n)
        if all(Levenshtein.distance(recalls[i], recalls[j]) > DIVERSITY_THRESHOLD for j in range(n) if j != i)
    ]
    chosen = distinct[:keep]
    rest = [i for i in range(n) if i not in chosen]
    chosen += rng.sample(rest, min(keep - len(chosen), len(rest)))
    return [candidates[i] for i in chosen]


def consistent(samples: list[ParsedAnswer], label: str) -> list[ParsedAnswer]:
    return [s for s in samples if s.verdict == label]
