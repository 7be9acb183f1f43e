"""Agreement between annotators: Cohen's kappa (two), Fleiss' kappa (more), the items they disagree on, and the
queue's overlap rule (how many annotators label an item before it leaves the queue).

An item is one (trace, stage, option) target; each annotator's latest label in force on it counts (an undone or
superseded label does not). Kappa is computed per stage over items that two or more annotators labelled.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from typing import Any

from tinythinker.stages import STAGES
from tinythinker.store.validate import StoreError


def cohen_kappa(ratings: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters from (rating of rater 1, rating of rater 2) per item.

    None when undefined: no items, or chance agreement of 1 (both raters always gave one and the same
    category)."""
    n = len(ratings)
    if not n:
        return None
    observed = sum(x == y for x, y in ratings) / n
    first, second = Counter(x for x, _ in ratings), Counter(y for _, y in ratings)
    expected = sum(first[k] * second[k] for k in first) / (n * n)
    if expected >= 1:
        return None
    return (observed - expected) / (1 - expected)


def fleiss_kappa(items: list[list[str]] | list[Counter]) -> float | None:
    """Fleiss' kappa from each item's ratings (a list of categories, or a Counter of category -> raters).

    Items may have different numbers of raters (the usual generalisation: each item's agreement is over its own
    rater pairs, category shares over all ratings); an item with fewer than two ratings is left out. With the
    same number of raters on every item this is Fleiss (1971) exactly. None when undefined."""
    counts = [c if isinstance(c, Counter) else Counter(c) for c in items]
    counts = [c for c in counts if sum(c.values()) >= 2]
    if not counts:
        return None
    per_item = []
    totals: Counter = Counter()
    for c in counts:
        m = sum(c.values())
        per_item.append(sum(v * (v - 1) for v in c.values()) / (m * (m - 1)))
        totals.update(c)
    p_bar = sum(per_item) / len(per_item)
    n_ratings = sum(totals.values())
    p_e = sum((v / n_ratings) ** 2 for v in totals.values())
    if p_e >= 1:
        return None
    return (p_bar - p_e) / (1 - p_e)


def latest_verdicts(store, annotators: list[str] | None = None) -> dict[tuple[int, str, str | None], dict[str, str]]:
    """{(trace_id, stage, option): {annotator: verdict}} from the labels in force, latest per annotator."""
    out: dict[tuple[int, str, str | None], dict[str, str]] = {}
    wanted = set(annotators) if annotators else None
    for r in store.db.query("SELECT trace_id, stage, option, annotator, verdict FROM current_labels ORDER BY id"):
        if wanted is not None and r["annotator"] not in wanted:
            continue
        out.setdefault((r["trace_id"], r["stage"], r["option"]), {})[r["annotator"]] = r["verdict"]
    return out


def _interpret(kappa: float | None) -> str:
    # Landis & Koch (1977), the usual reading of kappa.
    if kappa is None:
        return "undefined"
    for limit, word in ((0.0, "poor"), (0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial")):
        if kappa <= limit:
            return word
    return "almost perfect"


def agreement_by_stage(store, annotators: list[str] | None = None) -> list[dict[str, Any]]:
    """Per stage: the annotators who labelled items in common, the items labelled by two or more, the share of
    those items on which everyone agrees, kappa (Cohen's for two annotators, Fleiss' for more) and its reading.
    With more than two annotators, `pairwise` lists Cohen's kappa of every pair of them."""
    verdicts = latest_verdicts(store, annotators)
    rows = []
    for stage in STAGES:
        shared = {k: v for k, v in verdicts.items() if k[1] == stage and len(v) >= 2}
        names = sorted({a for v in shared.values() for a in v})
        row: dict[str, Any] = {"stage": stage, "annotators": names, "items": len(shared), "method": None,
                               "kappa": None, "agreement": None, "reading": "undefined", "pairwise": []}
        if shared:
            row["agreement"] = sum(len(set(v.values())) == 1 for v in shared.values()) / len(shared)
            if len(names) == 2:
                a, b = names
                row["method"] = "cohen"
                row["kappa"] = cohen_kappa([(v[a], v[b]) for v in shared.values()])
            else:
                row["method"] = "fleiss"
                row["kappa"] = fleiss_kappa([list(v.values()) for v in shared.values()])
                for a, b in combinations(names, 2):
                    both = [(v[a], v[b]) for v in shared.values() if a in v and b in v]
                    if both:
                        row["pairwise"].append({"annotators": [a, b], "items": len(both),
                                                "kappa": cohen_kappa(both)})
            row["reading"] = _interpret(row["kappa"])
        rows.append(row)
    return rows


def disagreements(store, stage: str | None = None, annotators: list[str] | None = None) -> list[dict[str, Any]]:
    """Items on which the annotators' latest verdicts differ, in trace order, with each annotator's verdict."""
    rows = []
    qids = {}
    for (trace_id, st, option), v in sorted(latest_verdicts(store, annotators).items(),
                                             key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        if (stage is not None and st != stage) or len(set(v.values())) < 2:
            continue
        if trace_id not in qids:
            r = store._one("SELECT question_id FROM traces WHERE id = ?", [trace_id])
            qids[trace_id] = r["question_id"] if r else None
        rows.append({"trace_id": trace_id, "question_id": qids[trace_id], "stage": st, "option": option,
                     "verdicts": dict(sorted(v.items())),
                     "summary": ", ".join(f"{a}: {x}" for a, x in sorted(v.items()))})
    return rows


def overlap_clause(annotator: str | None, overlap: int, alias: str = "t") -> tuple[str, list[Any]]:
    """The queue's SQL condition for an overlap of `overlap` annotators: the trace has no label in force from
    `annotator` and fewer than `overlap` annotators have labelled it.

    A trace with no label at all (n_current = 0) passes without the count; the distinct annotators of a trace are
    never more than its labels in force, so only labelled traces pay for counting them."""
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 1:
        raise StoreError(f"overlap must be a whole number >= 1, got {overlap!r}")
    if annotator is None:
        raise StoreError("an overlap above 1 needs an annotator name (whose queue it is)")
    sql = (f"({alias}.n_current = 0 OR ("
           f"NOT EXISTS (SELECT 1 FROM current_labels l WHERE l.trace_id = {alias}.id AND l.annotator = ?) AND "
           f"(SELECT COUNT(DISTINCT l.annotator) FROM current_labels l WHERE l.trace_id = {alias}.id) < ?))")
    return sql, [annotator, overlap]
