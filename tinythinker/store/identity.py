"""What makes two traces the same trace, whatever file (or line order) they came in.

A trace is identified by the model and iteration it is filed under, its question id, its stage type, every
stage's text (recall, each option's analysis, summary), the answer read from the summary, and its sampling
settings (which include `sample_index`, so k samples of one question are k traces even when two texts agree).
Timings, the import it came in and its store id are not part of it: the same run timed twice is the same trace.

`trace_key` is the sha256 of those fields as canonical JSON (sorted keys, no spaces); `traces.content_key` holds
it under a unique index (schema migration 0004), so the store cannot hold one trace twice.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def trace_key(model: str, iteration: int, question_id: str, stage_type: str, recall: str | None,
              analyses: dict[str, str], summary: str, predicted: str | None, sampling: dict[str, Any]) -> str:
    ident = [model, iteration, question_id, stage_type, recall, analyses, summary, predicted, sampling]
    text = json.dumps(ident, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
