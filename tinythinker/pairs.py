"""Preference pairs for self-reflection, built from the student's own sampled traces.

Faithful to the paper's code (shengminp/TinyThinker, scripts/generate.py, `generate_dpo_recall_data` and
`generate_dpo_analyze_data`); where this module departs from it, the comment at that spot says why.

`Pair` is the one pair type: phase 2 builds and trains on it, the store (`tinythinker.store`) keeps, exports and
imports it. This module does not import the store; the store's own checks on a pair are `store.pairs.check_pair`.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import KW_ONLY, asdict, dataclass, field
from typing import Any

from tinythinker import stages
from tinythinker.types import Question, Rationale, Trace

# Where a pair's chosen text came from: the student's own right trace (auto), a teacher rationale that balanced the
# counts (teacher), or people's labels in the store (curated).
AUTO, TEACHER, CURATED = "auto", "teacher", "curated"

_REQUIRED = ("prompt", "chosen", "rejected", "stage")


class PairError(ValueError):
    """A pair record that cannot be read; the message names where it came from and the field."""


def provenance_of(d: dict[str, Any]) -> Any:
    """A pair record's provenance. Records written before phase 2 and the store shared this one Pair type (phase 2's
    pairs.jsonl in older run folders, pairs handed to the store by older code) keep it in `meta` instead, a curated
    pair's store provenance nested as meta={"provenance": ...}; those must still load, so `meta` is the fallback."""
    if d.get("provenance"):
        return d["provenance"]
    meta = d.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("provenance"), dict):
        return {**{k: v for k, v in meta.items() if k != "provenance"}, **meta["provenance"]}
    return meta or {}


@dataclass
class Pair:
    """One DPO example: the same prompt with a preferred and a dispreferred completion."""

    prompt: str  # the stage's input as `stages` renders it
    chosen: str
    rejected: str
    stage: str  # stages.RECALL or stages.ANALYZE (the store takes any stage)
    question_id: str | None = None
    source: str = AUTO  # AUTO, TEACHER or CURATED
    # Keyword only: the two pair types this one replaced put different fields after question_id.
    _: KW_ONLY
    iteration: int | None = None  # the phase-2 iteration that made the pair (a curated one: of the text it corrects)
    provenance: dict[str, Any] = field(default_factory=dict)  # where the pair came from, plain JSON

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "pair") -> Pair:
        """A pair from its dict (to_dict's, a JSON line, a dataset row). PairError, naming `where` and the field,
        for a missing field or a provenance that is no object; the text checks are the store's (check_pair)."""
        if not isinstance(d, dict):
            raise PairError(f"{where}: not a pair (got {type(d).__name__}); expected a Pair or a dict")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise PairError(f"{where}: missing field {missing[0]!r}")
        provenance = provenance_of(d)
        if isinstance(provenance, str):  # the datasets export keeps provenance as a JSON string column
            try:
                provenance = json.loads(provenance)
            except json.JSONDecodeError as e:
                raise PairError(f"{where}: field 'provenance' is not valid JSON ({e.msg})") from None
        if not isinstance(provenance, dict):
            raise PairError(f"{where}: field 'provenance' must be an object, got {type(provenance).__name__}")
        return cls(
            prompt=d["prompt"], chosen=d["chosen"], rejected=d["rejected"], stage=d["stage"],
            question_id=d.get("question_id"), source=d.get("source") or AUTO,
            iteration=d.get("iteration"), provenance=provenance,
        )

    def key(self) -> str:
        """Identity of a pair in the store: the same texts from the same source and iteration are stored once."""
        blob = json.dumps([self.source, self.iteration, self.stage, self.prompt, self.chosen, self.rejected],
                          ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class AnalyzeContext:
    """A chosen recall on which the analyses are sampled for the analyze pairs.

    `backup` holds the analyses that went with this recall when it was chosen (the right trace's own, or the
    teacher rationale's): the paper's `analyze_backup`, used as chosen when no sampled analysis is right."""

    question: Question
    recall: str
    backup: list[tuple[dict[str, str], str]] = field(default_factory=list)  # (analyses, source)


def _unique(items: list[Any], key) -> list[Any]:
    seen: set = set()
    out = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def _sample(rng: random.Random, population: list[Any], n: int) -> list[Any]:
    # pandas' `.sample(n, replace=n > len)` in the paper: without replacement while the population allows it.
    if n <= len(population):
        return rng.sample(population, n)
    return rng.choices(population, k=n)


def _group(traces: list[Trace], key) -> dict[Any, list[Trace]]:
    groups: dict[Any, list[Trace]] = {}
    for t in traces:
        groups.setdefault(key(t), []).append(t)
    return groups


def recall_pairs(
    traces: list[Trace],
    teacher: dict[str, list[Rationale]] | None = None,
    seed: int = 0,
) -> tuple[list[Pair], list[AnalyzeContext]]:
    """Recall pairs from traces whose recall was sampled (the rest of the pipeline greedy).

    Per question: chosen = recalls whose trace predicted the answer, rejected = the others (a wrong or an
    invalid answer, as the paper compares `GT == prediction`); duplicates dropped, a text on both sides
    dropped from both, a question with no rejected recall skipped. Counts are balanced as the paper does:
    more chosen -> the rejected are resampled with replacement to as many; more rejected -> teacher recalls
    fill the chosen side. Returns the pairs and, one per distinct chosen recall, the context the analyze
    pairs are sampled on.
    """
    rng = random.Random(seed)
    teacher = teacher or {}
    pairs: list[Pair] = []
    contexts: dict[tuple[str, str], AnalyzeContext] = {}
    # An empty recall (the student wrote only EOS) is no text to prefer or reject; the store refuses it too.
    usable = [t for t in traces if t.recall is not None and t.recall.strip()]
    for qid, group in _group(usable, lambda t: t.question.id).items():
        question = group[0].question
        if question.answer is None:
            continue  # no ground truth, no preference
        chosen = _unique([t for t in group if t.correct], lambda t: t.recall)
        rejected = _unique([t for t in group if not t.correct], lambda t: t.recall)
        if not rejected:
            continue
        common = {t.recall for t in chosen} & {t.recall for t in rejected}
        chosen = [(t.recall, t.analyses, AUTO) for t in chosen if t.recall not in common]
        rejected = [t for t in rejected if t.recall not in common]
        if not rejected:
            continue
        if len(chosen) > len(rejected):
            rejected = rng.choices(rejected, k=len(chosen))
        elif len(rejected) > len(chosen):
            # Teacher recalls that equal a rejected text are left out: such a pair states no preference.
            rejected_texts = {t.recall for t in rejected}
            extra = [(r.recall, r.analyses, TEACHER) for r in teacher.get(qid, [])
                     if r.recall and r.recall.strip() and r.recall not in rejected_texts]
            if extra:
                chosen = chosen + _sample(rng, extra, len(rejected) - len(chosen))
            # Without teacher recalls the paper's zip pairs only as many as there are chosen.
        prompt = stages.recall_input(question)
        for (recall, analyses, source), bad in zip(chosen, rejected, strict=False):
            pairs.append(Pair(prompt, recall, bad.recall, stages.RECALL, qid, source,
                              provenance={"gt": question.answer, "rejected_prediction": bad.predicted}))
            # The paper samples analyses once per recall pair, so a recall chosen twice is sampled twice;
            # one context per distinct recall with the sample count of the caller spends the same budget
            # without sampling the same prompt in two places.
            ctx = contexts.setdefault((qid, recall), AnalyzeContext(question, recall))
            ctx.backup.append((dict(analyses), source))
    return pairs, list(contexts.values())


def _analyses_key(t: Trace) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(t.analyses.items()))


def analyze_pairs(
    traces: list[Trace],
    contexts: list[AnalyzeContext],
    seed: int = 0,
    stage_type: str = stages.DEFAULT_STAGE_TYPE,
) -> list[Pair]:
    """Analyze pairs from traces whose analyses were sampled on a fixed chosen recall.

    Per (question, recall): chosen = traces that predicted the answer, rejected = traces that predicted
    another listed option (invalid answers are dropped, as in the paper); duplicates of the whole set of
    analyses dropped, sets on both sides dropped. Only two options make pairs, as in the paper: the answer
    and the option the rejected trace predicted; for each, chosen = that option's analysis in the right
    trace, rejected = in the wrong one. With no right trace the analyses that came with the chosen recall
    (the context's backup: the recall-stage trace's or the teacher's) are the chosen side.
    """
    rng = random.Random(seed)
    backups = {(c.question.id, c.recall): c.backup for c in contexts}
    pairs: list[Pair] = []
    for (qid, recall), group in _group(traces, lambda t: (t.question.id, t.recall)).items():
        question = group[0].question
        gt = question.answer
        if gt is None:
            continue
        labels = question.labels
        chosen = _unique([t for t in group if t.predicted == gt], _analyses_key)
        rejected = _unique([t for t in group if t.predicted is not None and t.predicted != gt
                            and t.predicted in labels], _analyses_key)
        if not rejected:
            continue
        common = {_analyses_key(t) for t in chosen} & {_analyses_key(t) for t in rejected}
        chosen_sets = [(t.analyses, AUTO) for t in chosen if _analyses_key(t) not in common]
        rejected = [t for t in rejected if _analyses_key(t) not in common]
        if not rejected:
            continue
        if len(chosen_sets) > len(rejected):
            rejected = rng.choices(rejected, k=len(chosen_sets))
        elif len(rejected) > len(chosen_sets):
            need = len(rejected) - len(chosen_sets)
            if chosen_sets:
                # The paper replaces the chosen rows by `need` resampled ones (so its zip pairs only `need`
                # of the rejected); adding them instead balances the counts, which is what the step is for.
                chosen_sets = chosen_sets + rng.choices(chosen_sets, k=need)
            else:
                backup = [(a, src) for a, src in backups.get((qid, recall), []) if a]
                chosen_sets = rng.choices(backup, k=need) if backup else []
        for (good, source), bad in zip(chosen_sets, rejected, strict=False):
            for label in dict.fromkeys((gt, bad.predicted)):
                good_text, bad_text = good.get(label), bad.analyses.get(label)
                # A missing analysis cannot be a completion, and the same text on both sides states no
                # preference (its DPO gradient is zero); the paper would keep both kinds.
                if not (good_text or "").strip() or not (bad_text or "").strip() or good_text == bad_text:
                    continue
                prompt = stages.analyze_input(question, recall, label, stage_type)
                pairs.append(Pair(prompt, good_text, bad_text, stages.ANALYZE, qid, source,
                                  provenance={"gt": gt, "option": label, "rejected_prediction": bad.predicted}))
    return pairs


def pair_stats(traces: list[Trace], teacher: dict[str, list[Rationale]] | None = None) -> dict[str, int]:
    """Why a set of traces may build no pairs: how many questions were all right, all wrong, mixed. With
    `teacher`, also how many of the all-wrong ones have a teacher recall to fill the chosen side
    (`all_wrong_with_teacher`): without one such a question makes no recall pair."""
    out = {"questions": 0, "all_right": 0, "all_wrong": 0, "mixed": 0}
    if teacher is not None:
        out["all_wrong_with_teacher"] = 0
    for qid, group in _group(traces, lambda t: t.question.id).items():
        out["questions"] += 1
        right = sum(1 for t in group if t.correct)
        key = "all_right" if right == len(group) else "all_wrong" if right == 0 else "mixed"
        out[key] += 1
        if key == "all_wrong" and teacher is not None and any(r.recall and r.recall.strip()
                                                               for r in teacher.get(qid, [])):
            out["all_wrong_with_teacher"] += 1
    return out


# -- DPO micro-batches (memory) ------------------------------------------------------------------------------

CPU_MICRO_BATCH = 4  # pairs per forward on CPU: 8 rows (chosen and rejected) of a 135M student in a few GB


def micro_batch_count(batch_size: int, micro_batches: int | None, on_gpu: bool) -> int:
    """How many equal micro-batches one DPO step of `batch_size` pairs runs as: `micro_batches` when given, else
    on CPU the fewest of at most CPU_MICRO_BATCH pairs, on a GPU one piece. Torch-free: the app's memory
    estimate uses it before a job starts."""
    if micro_batches is not None:
        return micro_batches
    if on_gpu:
        return 1
    return next(k for k in range(1, batch_size + 1) if batch_size % k == 0 and batch_size // k <= CPU_MICRO_BATCH)
