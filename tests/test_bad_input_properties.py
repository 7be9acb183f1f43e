"""Property-based (Hypothesis): generated malformed questions (the JSONL loader, `data --data jsonl`) and traces
(`store import`) are always refused with exit status 2 and one line that names the file and, for a bad line, the
line; never a traceback; and the database's rows and integrity stay as they were (issue 16).

Each example writes a small file: a few valid records with one malformed record among them (or a file with no
record at all), so the property also checks that the error points at the right line, and that the valid records
before it were not kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from store_helpers import question, trace

from tinythinker.cli import main
from tinythinker.store import Store

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def assert_refused(rc: int, out: str, err: str, path: Path, line: int | None, sep: str) -> None:
    assert rc == 2, (rc, err)
    assert out == ""
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert str(path) in err, err
    if line is not None:
        assert re.search(rf"{re.escape(str(path))}{sep}line {line}\b", err), (line, err)


# ---- values -----------------------------------------------------------------------------------------------------

# Text valid in every field: no control characters, no "(B)" option marks, no "For option B," analysis marks.
SAFE = st.text(st.characters(codec="utf-8", categories=("L", "N", "Zs", "P", "S"), exclude_characters="()"),
               min_size=1, max_size=12).filter(lambda s: s.strip() and not re.search(r"For option [A-Z],", s))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
    max_leaves=5,
)
KIND = {type(None): "null", bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}


def not_of(*kinds: str):
    return JSON.filter(lambda v: KIND[type(v)] not in kinds)


CONTROL = st.sampled_from([chr(c) for c in [*range(0, 9), 11, 12, *range(14, 32), 127]])


def set_path(d: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        d = d[key]
    d[path[-1]] = value


def del_path(d: Any, path: tuple) -> None:
    for key in path[:-1]:
        d = d[key]
    del d[path[-1]]


def dumps(d: Any) -> bytes:
    # ASCII with \u escapes: lone surrogates can be written, and any byte >= 0x80 put in is invalid UTF-8.
    return json.dumps(d, ensure_ascii=True).encode()


def repeated_key(d: dict, nested: str | None, value: Any) -> bytes:
    """`d` as JSON text with one key written twice (plain json would keep the second, silently)."""
    def twice(obj: dict) -> str:
        key = next(iter(obj))
        return json.dumps(obj)[:-1] + f", {json.dumps(key)}: {json.dumps(value)}}}"

    if nested is None or not isinstance(d.get(nested), dict) or not d[nested]:
        return twice(d).encode()
    return json.dumps({**d, nested: "@@"}).replace('"@@"', twice(d[nested])).encode()


@st.composite
def syntax_error(draw, good: bytes, lists: bool = True) -> bytes:
    """A line that is not one JSON object: cut short, another JSON value, or a byte that is not UTF-8. (The data
    loader reads a file that starts with `[` as one JSON array, so there a list line is left to the unit tests.)"""
    how = draw(st.sampled_from(["truncated", "not_object", "bad_byte"]))
    if how == "truncated":
        return good[: draw(st.integers(1, len(good) - 1))]
    if how == "not_object":
        return dumps(draw(not_of("dict") if lists else not_of("dict", "list")))
    at = draw(st.integers(0, len(good)))
    return good[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + good[at:]


@st.composite
def layout(draw, good_lines: list[bytes], bad: bytes | None) -> tuple[bytes, int | None]:
    """The file's bytes and the line number of the bad record (None: a file without any record)."""
    if bad is None:
        return b"\n" * draw(st.integers(0, 3)) + b"  \n" * draw(st.integers(0, 1)), None
    lines = list(good_lines)
    at = draw(st.integers(0, len(lines)))
    lines.insert(at, bad)
    lead = draw(st.integers(0, 1))  # a blank line first: it still counts as a line
    return b"\n" * lead + b"\n".join(lines) + b"\n", at + 1 + lead


# ---- malformed traces for `store import` ------------------------------------------------------------------------

TRACE_TYPES: dict[tuple, tuple[str, ...]] = {
    ("question",): ("dict",), ("summary",): ("str",), ("recall",): ("str", "null"),
    ("analyses",): ("dict", "null"), ("predicted",): ("str", "null"), ("correct",): ("bool", "null"),
    ("stage_timings",): ("dict", "null"), ("sampling",): ("dict", "null"), ("stage_type",): ("str",),
    ("model",): ("str",), ("question", "id"): ("str", "int"), ("question", "stem"): ("str",),
    ("question", "options"): ("list",), ("question", "answer"): ("str", "null"), ("question", "source"): ("str",),
    ("question", "meta"): ("dict", "null"), ("question", "options", 0): ("dict",),
    ("question", "options", 1, "label"): ("str",), ("question", "options", 2, "text"): ("str",),
    ("sampling", "sample_index"): ("int", "null"), ("stage_timings", "recall"): ("int", "float"),
    ("analyses", "A"): ("str",),
}
TRACE_REQUIRED = [("question",), ("summary",), ("question", "id"), ("question", "stem"), ("question", "options"),
                  ("question", "options", 0, "label"), ("question", "options", 1, "text")]
TRACE_TEXTS = [("summary",), ("recall",), ("question", "stem"), ("analyses", "B"), ("question", "options", 2, "text"),
               ("question", "id"), ("question", "source")]


@st.composite
def good_trace(draw, n: int) -> dict:
    return trace(f"g{n}", draw(st.sampled_from("ABC")), recall=draw(SAFE), tag=" " + draw(SAFE),
                 q=question(f"g{n}", stem=draw(SAFE))).to_dict()


@st.composite
def bad_trace(draw, d: dict) -> bytes:
    family = draw(st.sampled_from(["missing", "wrong_type", "bad_value", "syntax", "repeated_key"]))
    if family == "missing":
        del_path(d, draw(st.sampled_from(TRACE_REQUIRED)))
    elif family == "wrong_type":
        path, kinds = draw(st.sampled_from(sorted(TRACE_TYPES.items())))
        set_path(d, path, draw(not_of(*kinds)))
    elif family == "bad_value":
        path, value = draw(st.one_of(
            st.tuples(st.just(("predicted",)), st.sampled_from(["Z", "a", "AB", "", " A"])),
            st.tuples(st.just(("stage_type",)), SAFE),
            st.tuples(st.sampled_from(TRACE_TEXTS), st.builds(lambda a, c, b: a + c + b, SAFE, CONTROL, SAFE)),
            st.tuples(st.sampled_from(TRACE_TEXTS), st.builds(lambda a: a + "\ud800", SAFE)),  # a lone surrogate
            st.tuples(st.sampled_from([("summary",), ("recall",), ("analyses", "C")]), st.just("x" * 10_001)),
            st.tuples(st.just(("question", "options")),
                      st.sampled_from([[], [{"label": "A", "text": "x"}],
                                       [{"label": "A", "text": "x"}, {"label": "A", "text": "y"}],
                                       [{"label": "a", "text": "x"}, {"label": "B", "text": "y"}],
                                       [{"label": "A", "text": "x"}, {"label": "B", "text": "y", "z": 1}]])),
            st.tuples(st.just(("question", "answer")), st.sampled_from(["Z", "a", ""])),
            st.tuples(st.just(("question", "id")), st.sampled_from(["", "   "])),
            st.tuples(st.just(("analyses",)), st.just({"Z": "x"})),
            st.tuples(st.just(("sampling", "sample_index")), st.sampled_from([-1, 2**63, 2**70, True])),
            st.tuples(st.sampled_from([("stage_timings", "recall"), ("sampling", "t")]), st.just(float("nan"))),
        ))
        if path == ("predicted",) and value == " A":
            value = "Z"  # " A" is not a label either, but keep the cases plainly wrong
        set_path(d, path, value)
    elif family == "syntax":
        return draw(syntax_error(dumps(d)))
    else:
        return repeated_key(d, draw(st.sampled_from([None, "question", "analyses"])), draw(JSON))
    return dumps(d)


@pytest.fixture(scope="module")
def store_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("props")
    db = folder / "tt.db"
    with Store(db) as s:
        s.import_traces([trace(f"s{i}", "AB"[i % 2]) for i in range(5)], model="m")
        s.label(1, "recall", "good", annotator="ana")
        s.label(2, "recall", "bad", text="A better recall.", annotator="bob")
        s.undo_last("bob")
        s.add_pairs([{"prompt": "P\nRecall:", "chosen": "c", "rejected": "r", "stage": "recall",
                      "question_id": "s1"}], iteration=0)
    return folder, db


def snapshot(db: Path) -> tuple[str, str]:
    """(sha256 of the whole database as SQL, integrity_check): every row of every table."""
    con = sqlite3.connect(db)
    try:
        dump = "\n".join(con.iterdump())
        return hashlib.sha256(dump.encode()).hexdigest(), con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


@st.composite
def trace_file(draw) -> tuple[bytes, int | None]:
    n = draw(st.integers(0, 3))
    good = [dumps(draw(good_trace(i))) for i in range(n)]
    if draw(st.integers(0, 19)) == 0:
        return draw(layout(good, None))  # no trace at all
    return draw(layout(good, draw(bad_trace(draw(good_trace(99))))))


@SETTINGS
@given(case=trace_file())
def test_store_import_refuses_malformed_traces(store_db, case):
    folder, db = store_db
    content, line = case
    before = snapshot(db)
    assert before[1] == "ok"
    path = folder / "traces.jsonl"
    path.write_bytes(content)
    rc, out, err = run(["store", "import", str(path), "--model", "m", "--db", str(db)])
    assert_refused(rc, out, err, path, line, sep=" ")
    assert snapshot(db) == before


# ---- malformed questions for the JSONL loader -------------------------------------------------------------------

QUESTION_TYPES: dict[tuple, tuple[str, ...]] = {
    ("question",): ("str",), ("options",): ("list", "dict"), ("answer",): ("str", "null"), ("id",): ("str", "int"),
    ("recall",): ("str", "null"), ("analyses",): ("list", "dict"), ("meta",): ("dict", "null"),
    ("options", 1): ("str",),
}


@st.composite
def good_question(draw, n: int) -> dict:
    options = draw(st.lists(SAFE, min_size=2, max_size=5))
    labels = "ABCDE"[: len(options)]
    d: dict[str, Any] = {"id": f"g{n}", "question": draw(SAFE), "options": options,
                         "answer": draw(st.sampled_from(labels))}
    if draw(st.booleans()):
        d["recall"] = draw(SAFE)
    if draw(st.booleans()):
        d["analyses"] = {lab: draw(SAFE) for lab in labels}
    return d


@st.composite
def bad_question(draw, d: dict, good: list[dict]) -> tuple[bytes, int | None]:
    """The bad line, and (for a duplicate id) the index of the earlier good record it repeats."""
    family = draw(st.sampled_from(["missing", "wrong_type", "bad_value", "syntax", "repeated_key", "duplicate_id"]))
    texts = {t.strip().lower() for t in d["options"]}
    if family == "missing":
        del d[draw(st.sampled_from(["question", "options", "answer"]))]
    elif family == "wrong_type":
        path, kinds = draw(st.sampled_from(sorted(QUESTION_TYPES.items())))
        set_path(d, path, draw(not_of(*kinds)))
    elif family == "bad_value":
        how = draw(st.sampled_from(["answer", "few", "many", "empty_text", "mark", "label", "analysis_label",
                                    "analyses_length", "analysis_mark", "answer_twice", "empty_question",
                                    "empty_id"]))
        if how == "answer":
            answer = draw(st.sampled_from(["Z", "", "zz", "?"]))
            assume(answer.strip().lower() not in texts)
            d["answer"] = answer
        elif how == "few":
            d["options"] = d["options"][: draw(st.integers(0, 1))]
            d["answer"] = None
        elif how == "many":
            d["options"] = [f"o{i}" for i in range(27)]
        elif how == "empty_text":
            d["options"][draw(st.integers(0, len(d["options"]) - 1))] = draw(st.sampled_from(["", " ", "\t"]))
        elif how == "mark":
            i = draw(st.integers(0, len(d["options"]) - 1))
            d["options"][i] = f"{d['options'][i]} ({draw(st.sampled_from('ABCZ'))}) {draw(SAFE)}"
        elif how == "label":
            d["options"] = {draw(st.sampled_from(["a", "1", "AB", "", "é"])): "x", "B": "y"}
            d["answer"] = "B"
        elif how == "analysis_label":
            d["analyses"] = {"Z": draw(SAFE)}
        elif how == "analyses_length":
            d["analyses"] = [draw(SAFE)] * draw(st.sampled_from([1, len(d["options"]) + 1]))
        elif how == "analysis_mark":
            d["analyses"] = {"A": f"{draw(SAFE)} For option B, {draw(SAFE)}"}
        elif how == "answer_twice":
            t = draw(SAFE)
            assume(t.strip() not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" or len(t.strip()) != 1)
            d["options"] = [t, draw(SAFE), t.upper() if t.upper().lower() == t.lower() else t]
            d["answer"] = t
            d.pop("analyses", None)
        elif how == "empty_question":
            d["question"] = draw(st.sampled_from(["", "  "]))
        else:
            d["id"] = ""
    elif family == "syntax":
        return draw(syntax_error(dumps(d), lists=False)), None
    elif family == "repeated_key":
        nested = "analyses" if isinstance(d.get("analyses"), dict) and draw(st.booleans()) else None
        if nested is None and draw(st.booleans()):
            d["options"] = dict(zip("ABCDE", d["options"], strict=False))
            nested = "options"
        return repeated_key(d, nested, draw(JSON)), None
    else:
        assume(good)
        i = draw(st.integers(0, len(good) - 1))
        d["id"] = good[i]["id"]
        return dumps(d), i
    return dumps(d), None


@st.composite
def question_file(draw) -> tuple[bytes, int | None]:
    good = [draw(good_question(i)) for i in range(draw(st.integers(0, 3)))]
    lines = [dumps(g) for g in good]
    if draw(st.integers(0, 19)) == 0:
        return draw(layout(lines, None))
    bad, repeats = draw(bad_question(draw(good_question(99)), good))
    content, line = draw(layout(lines, bad))
    if repeats is not None:
        # A duplicate id is reported at the later of the two records.
        text_lines = content.split(b"\n")
        first = text_lines.index(lines[repeats]) + 1
        line = max(line, first)
    return content, line


@SETTINGS
@given(case=question_file())
def test_jsonl_loader_refuses_malformed_questions(tmp_path_factory, case):
    content, line = case
    path = tmp_path_factory.getbasetemp() / "questions.jsonl"
    path.write_bytes(content)
    rc, out, err = run(["data", "--data", "jsonl", "--path", str(path), "--no-rationales"])
    assert_refused(rc, out, err, path, line, sep=", ")
