"""Pairwise labelling: two texts for the same stage and question (two samples of one model, or two models) side by
side, and a person's choice between them: 1 (first better), 2 (second better), = (tie) or s (skip).

A choice is history (schema 0003, table pair_choices; a later choice by the same annotator on the same item
supersedes the earlier). The choices in force become curated preference pairs (`pairwise_pairs`, included in
`Store.curated_pairs`) with the provenance of each side: model, checkpoint, iteration and sampling. Annotators who
prefer opposite sides of one item cancel out; ties and skips make no pair.

Only texts written for the same input are offered: the same stage prompt (`stage_prompt`), so an Analyze pair needs
the same Recall, a Summarize pair the same Recall and analyses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import combinations, product
from typing import Any

from tinythinker import stages
from tinythinker.store.pairs import SOURCES_CURATED, Pair, stage_prompt, stage_text
from tinythinker.store.validate import StoreError, check_name, check_stage, check_text

FIRST, SECOND, TIE, SKIP = "1", "2", "=", "s"
CHOICES = {FIRST: "first better", SECOND: "second better", TIE: "tie", SKIP: "skip"}


@dataclass
class PairwiseItem:
    question_id: str
    stage: str
    option: str | None
    first: Any  # StoredTrace
    second: Any  # StoredTrace
    prompt: str

    @property
    def first_text(self) -> str:
        return stage_text(self.first.trace, self.stage, self.option) or ""

    @property
    def second_text(self) -> str:
        return stage_text(self.second.trace, self.stage, self.option) or ""

    def key(self) -> tuple[int, int, str, str | None]:
        lo, hi = sorted((self.first.id, self.second.id))
        return lo, hi, self.stage, self.option

    def to_dict(self) -> dict[str, Any]:
        return {"question_id": self.question_id, "stage": self.stage, "option": self.option,
                "first_trace_id": self.first.id, "second_trace_id": self.second.id, "prompt": self.prompt,
                "first_text": self.first_text, "second_text": self.second_text,
                "first": side_provenance(self.first), "second": side_provenance(self.second)}


def side_provenance(stored) -> dict[str, Any]:
    """Where one side's text came from: its trace, the model and checkpoint, the iteration and the sampling."""
    t = stored.trace
    sampling = t.sampling if isinstance(t.sampling, dict) else {}
    return {"trace_id": stored.id, "model": stored.model, "checkpoint": t.model or stored.model,
            "iteration": stored.iteration, "sampling": sampling, "sample_index": sampling.get("sample_index"),
            "correct": t.correct, "predicted": t.predicted}


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def _swap(a: int, b: int, stage: str, option: str | None) -> bool:
    # Which side is shown first is fixed per item but not always the older trace: no position bias by id.
    return hashlib.sha1(f"{a}-{b}-{stage}-{option}".encode()).digest()[0] % 2 == 1


def _items_for(a, b, stage: str) -> list[PairwiseItem]:
    ta, tb = a.trace, b.trace
    if not (stages.uses(ta.stage_type, stage) and stages.uses(tb.stage_type, stage)):
        return []
    options = [None]
    if stage == stages.ANALYZE:
        options = [lab for lab in ta.question.labels if lab in ta.analyses and lab in tb.analyses]
    out = []
    for option in options:
        x, y = stage_text(ta, stage, option), stage_text(tb, stage, option)
        if not _norm(x) or not _norm(y) or _norm(x) == _norm(y):
            continue
        try:
            prompt = stage_prompt(ta, stage, option)
            if prompt != stage_prompt(tb, stage, option):
                continue
        except ValueError:
            continue
        lo, hi = (a, b) if a.id < b.id else (b, a)
        first, second = (hi, lo) if _swap(lo.id, hi.id, stage, option) else (lo, hi)
        out.append(PairwiseItem(ta.question.id, stage, option, first, second, prompt))
    return out


def _spec(store, spec):
    from tinythinker.store.core import ModelSpec

    if isinstance(spec, ModelSpec):
        return spec
    return ModelSpec(spec) if spec in set(store.models()) else ModelSpec.parse(spec)


def candidates(store, model_a: str, model_b: str | None = None, stage: str = stages.RECALL):
    """Every item to compare, in question order (first trace id): two traces of `model_a` on one question
    (two samples), or, with a different `model_b`, a trace of each. Each distinct pair of texts once per
    question, represented by its lowest trace ids. Models are `name` or `name@iteration`."""
    check_stage(stage)
    a = _spec(store, model_a)
    b = _spec(store, model_b) if model_b else None
    if b is not None and (a.name, a.iteration) == (b.name, b.iteration):
        b = None
    ca, pa = store._model_clause(a, "t")
    sql, params = f"SELECT t.id, t.question_id, {ca} AS in_a", pa
    where, wparams = ca, list(pa)
    if b is not None:
        cb, pb = store._model_clause(b, "t")
        sql += f", {cb} AS in_b"
        params = pa + pb
        where, wparams = f"({ca} OR {cb})", pa + pb
    rows = list(store.db.query(f"{sql} FROM traces t WHERE {where} ORDER BY t.id", params + wparams))
    by_question: dict[str, list[dict]] = {}
    for r in rows:
        by_question.setdefault(r["question_id"], []).append(r)
    for group in by_question.values():
        if b is None:
            if len(group) < 2:
                continue
            pairs = list(combinations([r["id"] for r in group], 2))
        else:
            side_a = [r["id"] for r in group if r["in_a"]]
            side_b = [r["id"] for r in group if r["in_b"]]
            pairs = [(x, y) for x, y in product(side_a, side_b) if x != y]
        if not pairs:
            continue
        loaded = {i: store.get_trace(i) for i in {i for p in pairs for i in p}}
        seen: set = set()
        for x, y in sorted(pairs, key=lambda p: (min(p), max(p))):
            for item in _items_for(loaded[x], loaded[y], stage):
                texts = (item.stage, item.option, frozenset((_norm(item.first_text), _norm(item.second_text))))
                if texts not in seen:
                    seen.add(texts)
                    yield item


def _choices_in_force(store) -> dict[tuple[int, int, str, str | None], dict[str, dict[str, Any]]]:
    """{item key: {annotator: latest choice row}}; the key orders the two trace ids."""
    out: dict[tuple[int, int, str, str | None], dict[str, dict[str, Any]]] = {}
    for r in store.db.query("SELECT * FROM pair_choices ORDER BY id"):
        lo, hi = sorted((r["first_trace_id"], r["second_trace_id"]))
        out.setdefault((lo, hi, r["stage"], r["option"]), {})[r["annotator"]] = r
    return out


def next_pair(store, annotator: str, model_a: str, model_b: str | None = None, stage: str = stages.RECALL,
              overlap: int | None = None) -> PairwiseItem | None:
    """The first item `annotator` has not chosen on (a skip counts as done) and that fewer than `overlap`
    annotators (default: the store's overlap setting) have decided (1, 2 or =); None when there is none."""
    from tinythinker.store.settings import get_overlap

    annotator = check_name(annotator, "annotator")
    overlap = get_overlap(store) if overlap is None else overlap
    done = _choices_in_force(store)
    for item in candidates(store, model_a, model_b, stage):
        by = done.get(item.key(), {})
        if annotator in by:
            continue
        if sum(r["choice"] != SKIP for r in by.values()) >= overlap:
            continue
        return item
    return None


def choose(store, first_trace_id: int, second_trace_id: int, stage: str, choice: str, annotator: str,
           option: str | None = None, note: str | None = None) -> dict[str, Any]:
    """Record `annotator`'s choice between the texts of two traces for one stage (and option, for Analyze).
    `first` / `second` are as shown; 1 means the first is better. Returns the stored row."""
    from tinythinker.store.core import _now

    if choice not in CHOICES:
        raise StoreError(f"unknown choice {choice!r}; choose one of {', '.join(CHOICES)} "
                         f"({', '.join(f'{k} = {v}' for k, v in CHOICES.items())})")
    check_stage(stage)
    if annotator is None or (isinstance(annotator, str) and not annotator.strip()):
        raise StoreError("an annotator name is required")
    annotator = check_name(annotator, "annotator")
    if first_trace_id == second_trace_id:
        raise StoreError("a pairwise choice needs two different traces")
    note = check_text(note, "note") if note else None
    with store._write():
        a, b = store.get_trace(first_trace_id), store.get_trace(second_trace_id)
        if a.trace.question.id != b.trace.question.id:
            raise StoreError(f"traces {a.id} and {b.id} answer different questions "
                             f"({a.trace.question.id!r}, {b.trace.question.id!r})")
        if stage == stages.ANALYZE and option is None:
            raise StoreError("an analyze choice needs an option")
        if stage != stages.ANALYZE and option is not None:
            raise StoreError(f"an option is only given for the analyze stage, not for {stage}")
        if all(i.option != option for i in _items_for(a, b, stage)):
            raise StoreError(f"traces {a.id} and {b.id} have no two different {stage} texts for the same input"
                             + (f" on option {option}" if option else ""))
        row = {"question_id": a.trace.question.id, "stage": stage, "option": option, "first_trace_id": a.id,
               "second_trace_id": b.id, "choice": choice, "annotator": annotator, "note": note,
               "created_at": _now()}
        row["id"] = store.db["pair_choices"].insert(row).last_pk
    return row


def choices(store, annotator: str | None = None) -> list[dict[str, Any]]:
    """Every pairwise choice ever made (history, oldest first), optionally one annotator's."""
    if annotator is None:
        return list(store.db.query("SELECT * FROM pair_choices ORDER BY id"))
    return list(store.db.query("SELECT * FROM pair_choices WHERE annotator = ? ORDER BY id", [annotator]))


def _winner(r: dict[str, Any]) -> int | None:
    if r["choice"] == FIRST:
        return r["first_trace_id"]
    if r["choice"] == SECOND:
        return r["second_trace_id"]
    return None


def pairwise_pairs(store) -> list[Pair]:
    """Curated pairs from the pairwise choices in force: chosen = the preferred trace's text, rejected = the
    other's. An item where annotators prefer opposite sides is left out; ties and skips make no pair."""
    pairs = []
    for (lo, hi, stage, option), by in _choices_in_force(store).items():
        winners = {_winner(r) for r in by.values()} - {None}
        if len(winners) != 1:
            continue
        win = winners.pop()
        chosen, rejected = (store.get_trace(lo), store.get_trace(hi)) if win == lo else \
            (store.get_trace(hi), store.get_trace(lo))
        voters = sorted(a for a, r in by.items() if _winner(r) == win)
        provenance = {
            "kind": "pairwise", "stage_type": chosen.trace.stage_type, "answer": chosen.trace.question.answer,
            "chosen": side_provenance(chosen), "rejected": side_provenance(rejected), "annotators": voters,
            "choice_ids": sorted(r["id"] for r in by.values() if _winner(r) == win),
        }
        if stage == stages.ANALYZE:
            provenance["option"] = option
        pairs.append(Pair(
            prompt=stage_prompt(chosen.trace, stage, option), chosen=stage_text(chosen.trace, stage, option),
            rejected=stage_text(rejected.trace, stage, option), stage=stage, question_id=chosen.trace.question.id,
            iteration=rejected.iteration, source=SOURCES_CURATED, provenance=provenance,
        ))
    return pairs


def pairwise_agreement(store) -> dict[str, Any]:
    """Counts of each choice in force, and agreement between annotators on the items two or more decided."""
    from tinythinker.store.agreement import cohen_kappa, fleiss_kappa

    in_force = _choices_in_force(store)
    counts = {name: 0 for name in CHOICES.values()}
    shared = []
    for (lo, _hi, _, _), by in in_force.items():
        votes = {}
        for a, r in by.items():
            counts[CHOICES[r["choice"]]] += 1
            if r["choice"] != SKIP:
                w = _winner(r)
                votes[a] = "tie" if w is None else ("lower" if w == lo else "higher")
        if len(votes) >= 2:
            shared.append(votes)
    names = sorted({a for v in shared for a in v})
    kappa = method = None
    if len(names) == 2:
        method = "cohen"
        kappa = cohen_kappa([(v[names[0]], v[names[1]]) for v in shared if len(v) == 2])
    elif len(names) > 2:
        method = "fleiss"
        kappa = fleiss_kappa([list(v.values()) for v in shared])
    return {"choices": counts, "items": len(in_force), "shared_items": len(shared), "annotators": names,
            "method": method, "kappa": kappa}
