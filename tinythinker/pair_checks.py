"""Checks on preference pairs before they train anything (export, a reflect job on curated pairs).

    report = check_pairs(pairs, store=store)     # store: optional, looks up the traces the pairs cite
    report.table                                 # [{check, value, threshold, ok, n, note}, ...]
    if report.failed: ...                        # names of the failing checks (empty list when all pass)

The checks:
    consistent outcome   share of pairs (whose outcome is known) where the chosen text led to the right answer and
                         the rejected one to a wrong answer; a pair that prefers the wrong answer's text teaches the
                         opposite of what the labels say
    duplicates           share of pairs repeating an earlier (stage, prompt, chosen, rejected)
    contradictions       pairs whose reverse (same prompt, chosen and rejected swapped) is also there
    identical sides      pairs whose two sides are the same text up to whitespace
    length ratio         mean chosen length / mean rejected length in words; far from 1 and DPO learns length
    chosen longer        among pairs whose sides differ in length, the share whose chosen side is the longer
    answer letter        the largest share of one answer letter among the pairs' chosen answers

A pair's outcome per side comes from, in order: `provenance["chosen_correct"]` (or `rejected_correct`), the origins
in `provenance["chosen"]` (a dict or a list of dicts with `correct`, else a `trace_id` looked up in the store; a
person's corrected text has no outcome), and phase 2's own construction (source or `chosen_from` "auto" or
"teacher": the chosen side from a right trace or the teacher, the rejected one from a wrong trace).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from tinythinker import stages
from tinythinker.pairs import Pair, provenance_of


@dataclass
class Thresholds:
    """Where each check passes. A reflect job with --refuse-failing-pairs refuses on any failing row, an export
    records the rows; the defaults are a line where a set of pairs would teach noticeably the wrong thing:

    consistent_min         a fifth of pairs preferring the wrong answer's text is already a strong opposite signal
    duplicates_max         a tenth repeated weighs those pairs double or more in every epoch
    contradictions_max,    a pair and its reverse cancel out, identical sides have no preference: none is harmless
    identical_max
    length_ratio_range     DPO readily learns "longer is better"; mean lengths within a factor of 1.5 either way
    chosen_longer_range    the chosen side longer in 20-80% of pairs, not (nearly) always or never
    letter_share_max       with 3-5 options, one letter as over half of the chosen answers teaches a letter prior
    min_pairs_for_balance  the balance checks mean little on a handful of pairs
    """

    consistent_min: float = 0.8
    duplicates_max: float = 0.1
    contradictions_max: int = 0
    identical_max: int = 0
    length_ratio_range: tuple[float, float] = (2 / 3, 1.5)
    chosen_longer_range: tuple[float, float] = (0.2, 0.8)
    letter_share_max: float = 0.5
    # Below this many pairs a balance check (length, letters) says too few rather than failing.
    min_pairs_for_balance: int = 10


@dataclass
class PairCheckReport:
    rows: list[dict[str, Any]]
    n: int
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def table(self) -> list[dict[str, Any]]:
        return self.rows

    @property
    def failed(self) -> list[str]:
        """Names of the checks that failed; empty (falsy) when every check passes."""
        return [r["check"] for r in self.rows if not r["ok"]]

    @property
    def ok(self) -> bool:
        return not self.failed

    def message(self) -> str:
        if self.ok:
            return f"{self.n} pairs pass every check"
        parts = [f"{r['check']} = {_fmt(r['value'])} (wanted {r['threshold']})" for r in self.rows if not r["ok"]]
        return f"{self.n} pairs fail {len(parts)} check(s): " + "; ".join(parts)

    def failures(self) -> list[str]:
        """One line per failing check: its name, value, threshold, how many pairs it judged and its note."""
        out = []
        for r in self.rows:
            if not r["ok"]:
                note = f"; {r['note']}" if r["note"] else ""
                out.append(f"{r['check']} = {_fmt(r['value'])} (wanted {r['threshold']}; {r['n']} pairs judged{note})")
        return out

    def text(self) -> str:
        """The table as aligned plain text, for logs."""
        cells = [("", "check", "value", "wanted", "n", "note")] + [
            ("ok" if r["ok"] else "FAIL", r["check"], _fmt(r["value"]), r["threshold"], str(r["n"]), r["note"])
            for r in self.rows]
        widths = [max(len(c[i]) for c in cells) for i in range(5)]
        return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(5)).rstrip() + (f"  {c[5]}" if c[5] else "")
                         for c in cells)

    def markdown(self) -> str:
        return markdown_table(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "ok": self.ok, "failed": self.failed, "checks": self.rows,
                "thresholds": asdict(self.thresholds)}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Check rows (a report's table, or the "checks" of its to_dict in a manifest) in Markdown, for a dataset card."""
    lines = ["| check | value | wanted | pairs judged | result | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        note = str(r.get("note") or "").replace("|", "\\|")
        lines.append(f"| {r['check']} | {_fmt(r['value'])} | {r['threshold']} | {r['n']} | "
                     f"{'pass' if r['ok'] else 'FAIL'} | {note} |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _get(p: Any, name: str, default: Any = None) -> Any:
    if isinstance(p, dict):
        return p.get(name, default)
    return getattr(p, name, default)


def _as_record(p: Any) -> dict[str, Any]:
    """A Pair or a pair's dict as one plain dict whose provenance is a dict (see pairs.provenance_of for the
    records older versions wrote)."""
    if isinstance(p, Pair):
        d = p.to_dict()
    elif isinstance(p, dict):
        d = {**p, "provenance": provenance_of(p)}
    else:
        raise TypeError(f"not a pair: {type(p).__name__}")
    if not isinstance(d["provenance"], dict):
        d["provenance"] = {}
    return d


def side_origins(value: Any) -> list[dict[str, Any]]:
    """The trace records behind one side of a pair's provenance: one dict, or a list of them (a merged pair)."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [o for o in value if isinstance(o, dict)]
    return []


def _side(d: dict[str, Any], side: str, outcomes: dict[int, tuple[bool | None, str | None]]
          ) -> tuple[bool | None, str | None]:
    """(led to the right answer?, the answer letter it led to) for one side; None where unknown."""
    prov = d["provenance"]
    flag = prov.get(f"{side}_correct")
    letter = prov.get(f"{side}_predicted")
    if isinstance(flag, bool):
        return flag, letter
    origins = side_origins(prov.get(side))
    if origins:
        flags, letters = [], []
        for o in origins:
            if o.get("corrected"):
                flags.append(None)
                continue
            c, pred = o.get("correct"), o.get("predicted")
            if not isinstance(c, bool) and isinstance(o.get("trace_id"), int) and o["trace_id"] in outcomes:
                c, pred = outcomes[o["trace_id"]]
            flags.append(c if isinstance(c, bool) else None)
            letters.append(pred)
        known = {f for f in flags if f is not None}
        flag = known.pop() if len(known) == 1 and None not in flags else None
        letter = letters[0] if letters and len(set(letters)) == 1 else None
        return flag, letter
    built_by = prov.get("chosen_from") or d.get("source")
    if built_by in ("auto", "teacher"):
        return side == "chosen", None
    return None, letter


def store_outcomes(store, pairs: list[Any]) -> dict[int, tuple[bool | None, str | None]]:
    """(correct, predicted) of every trace the pairs' provenance cites, read from the store in one query."""
    ids: set[int] = set()
    for p in pairs:
        prov = _as_record(p)["provenance"]
        for side in ("chosen", "rejected"):
            ids.update(o["trace_id"] for o in side_origins(prov.get(side)) if isinstance(o.get("trace_id"), int))
    out: dict[int, tuple[bool | None, str | None]] = {}
    ordered = sorted(ids)
    for i in range(0, len(ordered), 500):
        chunk = ordered[i:i + 500]
        marks = ",".join("?" * len(chunk))
        for r in store.db.query(f"SELECT id, correct, predicted FROM traces WHERE id IN ({marks})", chunk):
            out[r["id"]] = (None if r["correct"] is None else bool(r["correct"]), r["predicted"])
    return out


def _row(check: str, value: Any, threshold: str, ok: bool, n: int, note: str = "") -> dict[str, Any]:
    return {"check": check, "value": value, "threshold": threshold, "ok": bool(ok), "n": n, "note": note}


def check_pairs(pairs: list[Any], store=None, outcomes: dict[int, tuple[bool | None, str | None]] | None = None,
                thresholds: Thresholds | None = None) -> PairCheckReport:
    """Run every check on `pairs` (store Pairs, phase 2 Pairs or dicts); see the module doc for each check.

    `store` (a tinythinker.store.Store) or `outcomes` ({trace_id: (correct, predicted)}) resolve pairs whose
    provenance cites traces by id. No pairs: one failing row saying so."""
    th = thresholds or Thresholds()
    records = [_as_record(p) for p in pairs]
    n = len(records)
    if not n:
        return PairCheckReport([_row("pairs", 0, ">= 1", False, 0, "no pairs to check")], 0, th)
    if outcomes is None:
        outcomes = store_outcomes(store, pairs) if store is not None else {}
    rows = []

    # Consistent outcome.
    known = consistent = 0
    letters: list[str] = []
    for d in records:
        c_flag, c_letter = _side(d, "chosen", outcomes)
        r_flag, _ = _side(d, "rejected", outcomes)
        if c_flag is not None and r_flag is not None:
            known += 1
            consistent += c_flag and not r_flag
        if c_letter is None and d.get("stage") == stages.SUMMARIZE:
            c_letter = stages.parse_answer(d.get("chosen") or "")
        if c_letter is None and c_flag is True:
            c_letter = d["provenance"].get("answer")
        if c_letter:
            letters.append(str(c_letter))
    share = consistent / known if known else None
    rows.append(_row("consistent outcome", share, f">= {th.consistent_min:g}",
                     share is None or share >= th.consistent_min, known,
                     f"{n - known} pair(s) with an unknown outcome (a corrected text, or no trace)" if known < n
                     else ""))

    # Duplicates and contradictions.
    keys = [(d.get("stage"), d.get("prompt"), d.get("chosen"), d.get("rejected")) for d in records]
    counts = Counter(keys)
    dup = sum(c - 1 for c in counts.values())
    rows.append(_row("duplicates", dup / n, f"<= {th.duplicates_max:g}", dup / n <= th.duplicates_max, n,
                     f"{dup} repeated pair(s)" if dup else ""))
    contra = sum(1 for (s, p, c, r) in counts if (s, p, r, c) in counts and c != r)
    rows.append(_row("contradictions", contra, f"<= {th.contradictions_max}", contra <= th.contradictions_max, n,
                     "pairs whose reverse is also present" if contra else ""))

    # Identical sides.
    same = sum(1 for d in records if " ".join((d.get("chosen") or "").split())
               == " ".join((d.get("rejected") or "").split()))
    rows.append(_row("identical sides", same, f"<= {th.identical_max}", same <= th.identical_max, n))

    # Length balance.
    few = n < th.min_pairs_for_balance
    few_note = f"fewer than {th.min_pairs_for_balance} pairs: not judged" if few else ""
    c_len = [len((d.get("chosen") or "").split()) for d in records]
    r_len = [len((d.get("rejected") or "").split()) for d in records]
    mean_r = sum(r_len) / n
    ratio = (sum(c_len) / n) / mean_r if mean_r else None
    lo, hi = th.length_ratio_range
    rows.append(_row("length ratio (chosen / rejected words)", ratio, f"{lo:.2g} .. {hi:.2g}",
                     few or (ratio is not None and lo <= ratio <= hi), n, few_note))
    # Among pairs whose sides differ in length (summaries of one template often do not).
    longer = sum(c > r for c, r in zip(c_len, r_len, strict=True))
    differ = sum(c != r for c, r in zip(c_len, r_len, strict=True))
    share_longer = longer / differ if differ else None
    lo, hi = th.chosen_longer_range
    rows.append(_row("chosen side longer", share_longer, f"{lo:g} .. {hi:g}",
                     few or share_longer is None or lo <= share_longer <= hi, differ,
                     few_note or ("" if differ else "every pair's sides have the same length")))

    # Answer-letter balance.
    if letters:
        letter, top = Counter(letters).most_common(1)[0]
        top_share = top / len(letters)
        few_letters = len(letters) < th.min_pairs_for_balance
        rows.append(_row("largest answer-letter share", top_share, f"<= {th.letter_share_max:g}",
                         few_letters or top_share <= th.letter_share_max, len(letters),
                         (f"letter {letter}; " if not few_letters else
                          f"fewer than {th.min_pairs_for_balance} pairs with a letter: not judged; ")
                         + ", ".join(f"{k}: {v}" for k, v in sorted(Counter(letters).items()))))
    else:
        rows.append(_row("largest answer-letter share", None, f"<= {th.letter_share_max:g}", True, 0,
                         "no pair names the answer its chosen side led to"))
    return PairCheckReport(rows, n, th)
