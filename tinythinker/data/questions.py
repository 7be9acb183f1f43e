"""Record -> Question parsers for each file layout, with the checks every layout shares."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from typing import Any

from tinythinker.data.records import Loc, get
from tinythinker.types import Option, Question

LABELS = string.ascii_uppercase
# StrategyQA is yes/no; the paper renders it as a two-option question so all benchmarks share one format.
YES_NO = (Option("A", "yes"), Option("B", "no"))
# What stages.parse_input reads as the start of an option ("(B) ") or an analysis ("For option B,"): inside an
# option's text or an analysis it would read back as one more option or analysis than the question has.
_OPTION_MARK = re.compile(r"\(([A-Z])\)(?= |$)")
_ANALYSIS_MARK = re.compile(r"For option [A-Z],")


def make_question(loc: Loc, qid: str, stem: str, options: list[Option], answer: str | None, source: str,
                  meta: dict[str, Any] | None = None, *, options_field: str = "options",
                  answer_field: str = "answer") -> Question:
    """Build a Question after the checks every layout needs: >= 2 options, A-Z labels, a listed answer."""
    if len(options) < 2:
        raise loc.error(f"a question needs at least 2 options, got {len(options)}", field=options_field)
    seen = set()
    for o in options:
        if len(o.label) != 1 or o.label not in LABELS:
            raise loc.error(f"option label {o.label!r} is not a single letter A-Z", field=options_field)
        if o.label in seen:
            raise loc.error(f"option label {o.label!r} appears twice", field=options_field)
        seen.add(o.label)
        if not o.text.strip():
            raise loc.error(f"option {o.label} has empty text", field=options_field)
    if answer is not None and answer not in seen:
        raise loc.error(f"answer {answer!r} is not among the options {', '.join(o.label for o in options)}",
                        field=answer_field)
    return Question(id=qid, stem=stem, options=options, answer=answer, source=source, meta=dict(meta or {}))


def _id(obj: dict[str, Any], key: str, loc: Loc) -> str:
    value = get(obj, key, loc, (str, int))
    return str(value)


def parse_arc(loc: Loc, obj: dict[str, Any], source: str) -> Question:
    """CommonsenseQA / OpenBookQA layout: {id, question: {stem, choices: [{label, text}]}, answerKey}."""
    qid = _id(obj, "id", loc)
    q = get(obj, "question", loc, dict)
    stem = get(q, "stem", loc, field="question.stem")
    choices = get(q, "choices", loc, list, field="question.choices")
    options = []
    for i, c in enumerate(choices):
        if not isinstance(c, dict):
            raise loc.error(f"choice {i} is not an object", field="question.choices")
        options.append(Option(get(c, "label", loc, field=f"question.choices[{i}].label").strip(),
                              get(c, "text", loc, field=f"question.choices[{i}].text")))
    answer = get(obj, "answerKey", loc).strip()
    meta = {k: obj[k] for k in ("fact1", "humanScore", "clarity") if k in obj}
    if "question_concept" in q:
        meta["question_concept"] = q["question_concept"]
    return make_question(loc, qid, stem, options, answer, source, meta,
                         options_field="question.choices", answer_field="answerKey")


def parse_strategyqa(loc: Loc, obj: dict[str, Any], source: str = "strategyqa") -> Question:
    """StrategyQA: {qid, question, answer: bool, facts, decomposition, term, description} -> (A) yes (B) no."""
    qid = _id(obj, "qid", loc)
    stem = get(obj, "question", loc)
    answer = get(obj, "answer", loc, bool)
    meta = {}
    for key in ("facts", "decomposition"):
        if key in obj:
            value = obj[key]
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise loc.error("expected a list of strings", field=key)
            meta[key] = list(value)
    for key in ("term", "description"):
        if obj.get(key) is not None:
            meta[key] = str(obj[key])
    return make_question(loc, qid, stem, list(YES_NO), "A" if answer else "B", source, meta)


def parse_user(loc: Loc, obj: dict[str, Any], source: str) -> Question:
    """The generic schema (docs/DATA.md): {id?, question, options: [..] | {"A": ..}, answer, recall?, analyses?}."""
    qid = _id(obj, "id", loc) if "id" in obj else f"line-{loc.line}" if loc.line else f"record-{loc.record}"
    stem = get(obj, "question", loc)
    raw = get(obj, "options", loc, (list, dict))
    if isinstance(raw, list):
        if len(raw) > len(LABELS):
            raise loc.error(f"at most {len(LABELS)} options, got {len(raw)}", field="options")
        options = []
        for i, text in enumerate(raw):
            if not isinstance(text, str):
                raise loc.error(f"option {i} is not a string", field="options")
            options.append(Option(LABELS[i], text))
    else:
        options = []
        for label, text in raw.items():
            if not isinstance(text, str):
                raise loc.error(f"option {label!r} is not a string", field="options")
            options.append(Option(str(label).strip(), text))
    for o in options:
        mark = _OPTION_MARK.search(" ".join(o.text.split()))
        if mark:
            raise loc.error(f"option {o.label}'s text contains {mark.group()!r}, which the stage prompt would read "
                            f"back as the start of another option {mark.group(1)}; reword it (e.g. 'option "
                            f"{mark.group(1)}')", field="options")
    if "answer" not in obj:
        raise loc.error("missing (use null for an unlabelled question)", field="answer")
    answer = obj["answer"]
    if answer is not None:
        if not isinstance(answer, str):
            raise loc.error(f"expected a label or an option's text, got {type(answer).__name__}", field="answer")
        answer = _answer_label(answer, options, loc)
    if obj.get("meta") is not None and not isinstance(obj["meta"], dict):
        raise loc.error(f"expected an object (or null), got {type(obj['meta']).__name__}", field="meta")
    meta: dict[str, Any] = dict(obj.get("meta") or {})
    if "recall" in obj:
        if obj["recall"] is not None and not isinstance(obj["recall"], str):
            raise loc.error("expected a string or null", field="recall")
        meta["recall"] = obj["recall"]
    if "analyses" in obj:
        meta["analyses"] = _analyses(obj["analyses"], options, loc)
    return make_question(loc, qid, stem, options, answer, source, meta)


def _answer_label(answer: str, options: list[Option], loc: Loc) -> str:
    a = answer.strip()
    if a in {o.label for o in options}:
        return a
    # An answer may also be given as the option's text; unknown text is left as-is so the label check names it.
    by_text = [o.label for o in options if o.text.strip().lower() == a.lower()]
    if len(by_text) > 1:
        raise loc.error(f"answer {answer!r} matches the text of options {', '.join(by_text)}; give the letter of "
                        "the right one", field="answer")
    return by_text[0] if by_text else a


def _analyses(raw: Any, options: list[Option], loc: Loc) -> dict[str, str]:
    labels = [o.label for o in options]
    if isinstance(raw, list):
        if len(raw) != len(labels):
            raise loc.error(f"a list of analyses needs one per option ({len(labels)}), got {len(raw)}",
                            field="analyses")
        raw = dict(zip(labels, raw, strict=True))
    if not isinstance(raw, dict):
        raise loc.error(f"expected a list or an object keyed by label, got {type(raw).__name__}",
                        field="analyses")
    out = {}
    for label, text in raw.items():
        if label not in labels:
            raise loc.error(f"analysis for {label!r}, which is not an option label", field="analyses")
        if text is None:
            continue
        if not isinstance(text, str):
            raise loc.error(f"analysis for {label!r} is not a string", field="analyses")
        mark = _ANALYSIS_MARK.search(" ".join(text.split()))
        if mark:
            raise loc.error(f"analysis for {label!r} contains {mark.group()!r}, which the Summarize prompt would "
                            "read back as the start of another analysis; reword it", field="analyses")
        out[label] = text
    return out


def unique_ids(items: Iterable[tuple[Loc, Question]], id_field: str = "id") -> list[Question]:
    """Questions in order; a repeated id is a DataError naming both places."""
    first: dict[str, Loc] = {}
    out = []
    for loc, q in items:
        if q.id in first:
            raise loc.error(f"duplicate id {q.id!r} (first at {first[q.id]})", field=id_field)
        first[q.id] = loc
        out.append(q)
    return out
