"""What the students' own texts look like: length and looping of Recall and Analyze per traces file, and how
often a Recall names an option (any, or the gold answer) as ECQA's matching judges it.

A loop is a sentence that appears twice or more in one text (the reflected student's Recalls repeat one sentence
until the token limit, which the browser walk showed). Greedy traces of the same questions, so the files compare:

    .venv/bin/python bench/trace_stats.py demo/models/tinythinker-smollm2-p1-equal/traces/validation.jsonl \
        demo/models/tinythinker-smollm2-reflected/traces/validation.jsonl --questions 200

`--baseline FILE` (another model's traces, e.g. answer-only) splits each file's questions by whether its Recall
names the gold answer and compares the two models on each part, question by question (exact McNemar):

    .venv/bin/python bench/trace_stats.py bench/traces/p1-equal.from-analyze.val600.jsonl \
        --baseline bench/traces/p1-sum-lora210.val600.jsonl --questions 600
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinythinker.compare import paired, slice_report  # noqa: E402
from tinythinker.data.ecqa import options_named  # noqa: E402
from tinythinker.traces import read_traces  # noqa: E402


def sentences(text: str) -> list[str]:
    return [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", text or "") if s.strip()]


def loops(text: str) -> bool:
    parts = sentences(text)
    return len(parts) != len(set(parts))


def names(trace, answer_only: bool = False) -> bool:
    q = trace.question
    named = options_named([o.text for o in q.options], trace.recall or "")
    if answer_only:
        return q.answer in q.labels and q.labels.index(q.answer) in named
    return bool(named)


def stats(path: Path, questions: int | None) -> dict:
    traces = read_traces(path)[:questions]
    recalls = [t.recall or "" for t in traces]
    analyses = [a for t in traces for a in (t.analyses or {}).values()]
    n = len(traces)
    gives_answer = [names(t, answer_only=True) for t in traces]
    return {
        "file": str(path), "questions": n, "accuracy": sum(t.correct for t in traces) / n,
        "recall_words": sum(len(r.split()) for r in recalls) / n,
        "recall_loops": sum(loops(r) for r in recalls) / n,
        "analysis_words": sum(len(a.split()) for a in analyses) / max(len(analyses), 1),
        "analysis_loops": sum(loops(a) for a in analyses) / max(len(analyses), 1),
        "accuracy_when_recall_loops": _acc([t for t in traces if loops(t.recall or "")]),
        "accuracy_when_recall_does_not_loop": _acc([t for t in traces if not loops(t.recall or "")]),
        "recall_names_an_option": sum(names(t) for t in traces) / n,
        "recall_names_the_answer": sum(gives_answer) / n,
        # How much of the accuracy rides on a Recall that gives the answer away (the teacher's do, 67% of them)
        "accuracy_when_recall_names_the_answer": _acc([t for t, g in zip(traces, gives_answer, strict=True) if g]),
        "accuracy_otherwise": _acc([t for t, g in zip(traces, gives_answer, strict=True) if not g]),
    }


def against_baseline(path: Path, baseline: Path, questions: int | None) -> list[dict]:
    """Per part of `path`'s questions (its Recall names the gold answer, or not): both models' accuracy on that
    part and the flips baseline -> `path` (compare.slice_report, with this script's ECQA matcher as the slice).
    A Recall that names no answer can still help the later stages; this says whether it does, on the same
    questions, apart from the help of giving the answer away."""
    pairs = paired(read_traces(baseline), read_traces(path)[:questions])
    part = {"recall names the answer": lambda _, t: "names the answer" if names(t, answer_only=True)
            else "names no answer"}
    rows = slice_report(pairs, part)
    return sorted(rows, key=lambda r: r["value"] != "names the answer")


def _acc(traces) -> float | None:
    return sum(t.correct for t in traces) / len(traces) if traces else None


def _label(path: Path) -> str:
    """A shipped model's traces by the model's name, other files by theirs."""
    return path.parent.parent.name if path.name == "validation.jsonl" else path.name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+", type=Path)
    p.add_argument("--questions", type=int, default=None, help="the first N traces of each file")
    p.add_argument("--baseline", type=Path, help="another model's traces: compare on the questions each Recall "
                   "does / does not give away")
    args = p.parse_args()
    print("| traces | n | acc | recall words | recall loops | analysis words | analysis loops | acc, recall loops "
          "| acc, no loop | recall names an option | names the answer | acc, names the answer | acc, otherwise |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    for path in args.traces:
        s = stats(path, args.questions)
        print(f"| {_label(path)} | {s['questions']} | "
              f"{fmt(s['accuracy'])} | {s['recall_words']:.1f} | {fmt(s['recall_loops'])} | "
              f"{s['analysis_words']:.1f} | {fmt(s['analysis_loops'])} | {fmt(s['accuracy_when_recall_loops'])} | "
              f"{fmt(s['accuracy_when_recall_does_not_loop'])} | {fmt(s['recall_names_an_option'])} | "
              f"{fmt(s['recall_names_the_answer'])} | {fmt(s['accuracy_when_recall_names_the_answer'])} | "
              f"{fmt(s['accuracy_otherwise'])} |")
    if args.baseline:
        print(f"\n| traces | Recall | n | acc | {_label(args.baseline)} | right->wrong | wrong->right | exact McNemar p |")
        print("|---|---|---|---|---|---|---|---|")
        for path in args.traces:
            for r in against_baseline(path, args.baseline, args.questions):
                print(f"| {_label(path)} | {r['value']} | {r['n']} | {fmt(r['acc_b'])} | "
                      f"{fmt(r['acc_a'])} | {r['right->wrong']} | {r['wrong->right']} | "
                      f"{r['p_value']:.3g} |")


if __name__ == "__main__":
    main()
