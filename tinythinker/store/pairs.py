"""Preference pairs in the store: the checks a pair passes before it is stored, and curated pairs built from
people's labels. The pair itself is `tinythinker.pairs.Pair` (phase 2's), re-exported here.

A pair is (prompt, chosen, rejected) for one stage, where the prompt is that stage's input as `stages` renders it
from the trace the texts came from. Curated pairs: per (stage, prompt), texts labelled good (a corrected text always
counts as good) against texts labelled bad for that same prompt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tinythinker import stages
from tinythinker.pairs import AUTO, CURATED, Pair, PairError
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

__all__ = ["Pair", "SOURCES_AUTO", "SOURCES_CURATED", "check_pair", "curated_pairs", "read_pair", "stage_prompt",
           "stage_text"]

# The one Pair type (`tinythinker.pairs.Pair`) and its source names, under the names the store has used.
SOURCES_AUTO, SOURCES_CURATED = AUTO, CURATED


def read_pair(obj: Any, where: str) -> Pair:
    """A Pair as given, or read from its dict (a JSON line, a dataset row, what add_pairs is handed); a record that
    cannot be read raises the store's error, naming `where` and the field."""
    if isinstance(obj, Pair):
        return obj
    try:
        return Pair.from_dict(obj, where)
    except PairError as e:
        raise StoreError(str(e)) from None


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
