"""Self-consistency at k = 1..K from sampled traces: the majority answer of each question's first k samples, over
one or more traces files of the same questions (samples of two `evaluate --num-samples 5` runs with different
`--seed` and the same `--split-seed` make k = 10). Ties and invalid answers follow `pipeline.self_consistency`.

    .venv/bin/python bench/self_consistency.py bench/traces/p1-equal-sc5.val100.jsonl \
        bench/traces/p1-equal-sc5-seed1.val100.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinythinker.pipeline import self_consistency  # noqa: E402
from tinythinker.traces import read_traces  # noqa: E402


def samples_by_question(paths: list[Path]) -> dict[str, list]:
    """Each question's samples in file order, then sample order; every file must hold the same questions."""
    by_question: dict[str, list] = {}
    for path in paths:
        traces = read_traces(path)
        ids = {t.question.id for t in traces}
        if by_question and ids != set(by_question):
            raise ValueError(f"{path}: holds other questions than {paths[0]} ({len(ids ^ set(by_question))} differ)")
        for t in traces:
            by_question.setdefault(t.question.id, []).append(t)
    return by_question


def curve(by_question: dict[str, list]) -> list[dict]:
    k_max = min(len(s) for s in by_question.values())
    answers = {q: s[0].question.answer for q, s in by_question.items()}
    rows = []
    for k in range(1, k_max + 1):
        votes = self_consistency([t for s in by_question.values() for t in s[:k]])
        rows.append({"k": k, "accuracy": sum(votes[q] == a for q, a in answers.items()) / len(answers),
                     "any_sample_right": sum(any(t.correct for t in s[:k]) for s in by_question.values())
                     / len(answers)})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    by_question = samples_by_question(args.traces)
    rows = curve(by_question)
    if args.json:
        print(json.dumps({"questions": len(by_question), "files": [str(x) for x in args.traces], "curve": rows}))
        return 0
    print(f"{len(by_question)} questions")
    print("| k | majority-vote accuracy | at least one sample right |\n|---|---|---|")
    for r in rows:
        print(f"| {r['k']} | {r['accuracy']:.1%} | {r['any_sample_right']:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
