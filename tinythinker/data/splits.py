"""Seeded, reproducible train/validation splits and a fingerprint of a split's ordered ids.

The paper's code draws its validation sets without a seed; here the same seed always gives the same split.
"""

from __future__ import annotations

import hashlib
import random

from tinythinker.types import Question

CSQA_VALIDATION_SIZE = 1221  # the size of CommonsenseQA's official dev set, which the paper keeps for testing
STRATEGYQA_VALIDATION_FRACTION = 0.1


def seeded_split(pool: list[Question], n_validation: int, seed: int) -> tuple[list[Question], list[Question]]:
    """(train, validation): `n_validation` questions drawn with `seed`; both keep the pool's order."""
    if not 0 < n_validation < len(pool):
        raise ValueError(f"cannot hold out {n_validation} of {len(pool)} questions for validation")
    held = set(random.Random(seed).sample(range(len(pool)), n_validation))
    train = [q for i, q in enumerate(pool) if i not in held]
    validation = [q for i, q in enumerate(pool) if i in held]
    return train, validation


def fraction_size(n: int, fraction: float) -> int:
    return max(1, round(n * fraction))


def split_fingerprint(questions: list[Question]) -> str:
    """First 16 hex digits of sha256 over the ordered ids, one a line: equal iff same ids in the same order."""
    h = hashlib.sha256("\n".join(q.id for q in questions).encode("utf-8"))
    return h.hexdigest()[:16]
