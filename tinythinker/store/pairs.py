"""Preference pairs: the record phase 2 trains on, and curated pairs built from people's labels.

A pair is (prompt, chosen, rejected) for one stage, where the prompt is that stage's input as `stages` renders it
from the trace the texts came from. Curated pairs: per (stage, prompt), texts labelled good (a corrected text always
counts as good) against texts labelled bad for that same prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from tinythinker import stages
from tinythinker.store.validate import (
    MAX_NAME_CHARS,
    MAX_PROMPT_CHARS,
    StoreError,
    check_iteration,
    check_name,
    check_stage,
    check_text,
)
from tinythinker.types import Trace

SOURCES_AUTO, SOURCES_CURATED = "auto", "curated"


@dataclass
class Pair:
    prompt: str
    chosen: str
    rejected: str
    stage: str
    question_id: str | None = None
    iteration: int | None = None
    source: str = SOURCES_AUTO
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "pair") -> Pair:
        missing = [k for k in ("prompt", "chosen", "rejected", "stage") if k not in d]
        if missing:
            raise StoreError(f"{where}: missing field {missing[0]!r}")
        # Phase 2's own Pair keeps where a pair came from in `meta`; take it as provenance when none is given.
        provenance = d.get("provenance") or d.get("meta") or {}
        if isinstance(provenance, str):  # the datasets export keeps provenance as a JSON string column
            try:
                provenance = json.loads(provenance)
            except json.JSONDecodeError as e:
                raise StoreError(f"{where}: field 'provenance' is not valid JSON ({e.msg})") from None
        return cls(
            prompt=d["prompt"], chosen=d["chosen"], rejected=d["rejected"], stage=d["stage"],
            question_id=d.get("question_id"), iteration=d.get("iteration"),
            source=d.get("source") or SOURCES_AUTO, provenance=provenance,
        )

    def key(self) -> str:
        """Identity of a pair in the store: the same texts from the same source and iteration are stored once."""
        blob = json.dumps([self.source, self.iteration, self.stage, self.prompt, self.chosen, self.rejected],
                          ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def as_pair(obj: Any, where: str) -> Pair:
    """Phase 2 may hand its own pair objects: a Pair, a mapping, a dataclass or anything with to_dict()."""
    if isinstance(obj, Pair):
        return obj
    if isinstance(obj, dict):
        return Pair.from_dict(obj, where)
    if is_dataclass(obj) and not isinstance(obj, type):
        return Pair.from_dict(asdict(obj), where)
    if hasattr(obj, "to_dict"):
        return Pair.from_dict(obj.to_dict(), where)
    raise StoreError(f"{where}: not a pair (got {type(obj).__name__}); expected a Pair or a dict")


def check_pair(p: Pair, where: str) -> Pair:
    check_stage(p.stage, where)
    check_text(p.prompt, "prompt", limit=MAX_PROMPT_CHARS, where=where, empty_ok=False)
    check_text(p.chosen, "chosen", where=where, empty_ok=False)
    check_text(p.rejected, "rejected", where=where, empty_ok=False)
    if p.chosen == p.rejected:
        raise StoreError(f"{where}: chosen and rejected are the same text")
    if p.question_id is not None:
        check_name(p.question_id, "question_id", where)
    if p.iteration is not None:
        check_iteration(p.iteration, where)
    check_text(p.source, "source", limit=MAX_NAME_CHARS, where=where, empty_ok=False)
    if not isinstance(p.provenance, dict):
        raise StoreError(f"{where}: field 'provenance' must be an object")
    try:
        json.dumps(p.provenance, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{where}: field 'provenance' is not plain JSON ({e})") from None
    return p


def stage_prompt(trace: Trace, stage: str, option: str | None = None) -> str:
    """The input the student saw when it wrote this stage's text; rendered by `stages`, never by hand."""
    q = trace.question
    if stage == stages.RECALL:
        return stages.recall_input(q)
    if stage == stages.ANALYZE:
        return stages.analyze_input(q, trace.recall, option, trace.stage_type)
    return stages.summarize_input(q, trace.recall, trace.analyses, trace.stage_type)


def stage_text(trace: Trace, stage: str, option: str | None = None) -> str | None:
    if stage == stages.RECALL:
        return trace.recall
    if stage == stages.ANALYZE:
        return trace.analyses.get(option)
    return trace.summary


def curated_pairs(labelled: Iterable[tuple[Any, list[Any]]]) -> list[Pair]:
    """Pairs from (StoredTrace, current labels) items.

    Per trace, stage and option, each annotator's latest label counts. The original text is good when some
    annotator says good and none says bad, bad in the mirror case; unsure or a disagreement leaves it out. A
    corrected text is good whatever the verdict next to it. Texts that end up on both sides are dropped, as
    phase 2 drops them from automatic pairs. Every good text is paired with every bad one for the same prompt.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for stored, labels in labelled:
        latest: dict[tuple[str, str | None, str], Any] = {}
        for lab in sorted(labels, key=lambda x: x.id):
            latest[(lab.stage, lab.option, lab.annotator)] = lab
        by_target: dict[tuple[str, str | None], list[Any]] = {}
        for (stage, option, _), lab in latest.items():
            by_target.setdefault((stage, option), []).append(lab)
        trace = stored.trace
        for (stage, option), labs in sorted(by_target.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            prompt = stage_prompt(trace, stage, option)
            group = groups.setdefault((stage, prompt), {
                "good": {}, "bad": {}, "question_id": trace.question.id, "option": option,
                "stage_type": trace.stage_type,
            })
            # The checkpoint (the model name it is stored under, or the trace's own), iteration and sampling
            # that wrote the text: the same lineage a pairwise side records.
            sampling = trace.sampling if isinstance(trace.sampling, dict) else {}
            origin = {"trace_id": stored.id, "model": stored.model, "checkpoint": trace.model or stored.model,
                      "iteration": stored.iteration, "sampling": sampling,
                      "sample_index": sampling.get("sample_index")}
            verdicts = {lab.verdict for lab in labs}
            original = stage_text(trace, stage, option)
            side = None
            if "good" in verdicts and "bad" not in verdicts:
                side = "good"
            elif "bad" in verdicts and "good" not in verdicts:
                side = "bad"
            if side and original:
                group[side].setdefault(original, []).append({
                    **origin, "corrected": False, "label_ids": [lab.id for lab in labs if lab.verdict == side],
                    "annotators": sorted({lab.annotator for lab in labs if lab.verdict == side}),
                })
            for lab in labs:
                if lab.text:
                    group["good"].setdefault(lab.text, []).append({
                        **origin, "corrected": True, "label_ids": [lab.id], "annotators": [lab.annotator],
                    })
    pairs = []
    for (stage, prompt), g in groups.items():
        both = g["good"].keys() & g["bad"].keys()
        good = [(t, src) for t, src in g["good"].items() if t not in both]
        bad = [(t, src) for t, src in g["bad"].items() if t not in both]
        for chosen, chosen_src in good:
            for rejected, rejected_src in bad:
                provenance = {"stage_type": g["stage_type"], "chosen": chosen_src, "rejected": rejected_src}
                if stage == stages.ANALYZE:
                    provenance["option"] = g["option"]
                pairs.append(Pair(
                    prompt=prompt, chosen=chosen, rejected=rejected, stage=stage, question_id=g["question_id"],
                    # The iteration of the model whose bad text the pair corrects.
                    iteration=rejected_src[0]["iteration"], source=SOURCES_CURATED, provenance=provenance,
                ))
    return pairs
