"""`python -m tinythinker data` (a split's size, fingerprint and rationale coverage) and
`python -m tinythinker show` (one question with its teacher rationales in the three stage formats)."""

from __future__ import annotations

import argparse
import json
import textwrap

from tinythinker import stages
from tinythinker.data import (
    BENCHMARKS,
    ENV_DATA_DIR,
    SPLITS,
    USER_FORMATS,
    MissingDataError,
    default_source,
    load_questions,
    load_rationales,
    rationale_coverage,
    resolve_data_dir,
    split_fingerprint,
)
from tinythinker.types import Question, Rationale

DATA_DIR_HELP = (f"local data folder (see docs/DATA.md); default: ${ENV_DATA_DIR}, else ./data if it exists, "
                 "else the Hugging Face hub ('hub' forces the hub)")


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (`--limit -5` or `--limit 0` is a mistake, not an empty split)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _common(p: argparse.ArgumentParser, split_default: str) -> None:
    p.add_argument("--data", default="csqa", choices=BENCHMARKS + USER_FORMATS,
                   help="benchmark, or jsonl (your own questions) / paper (the paper's released folder) with --path")
    p.add_argument("--split", default=split_default, choices=SPLITS)
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument("--path", default=None, help="with --data jsonl: a .jsonl file or a folder of "
                   "{train,validation,test}.jsonl; with --data paper: the folder of recall.json / analyze.json / ...")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation draw (CSQA, StrategyQA, jsonl)")
    p.add_argument("--source", default=None,
                   help="rationale source (default: the benchmark's own: csqa ecqa, obqa fact1, strategyqa facts, "
                        "jsonl inline); also ecqa-explanation, ecqa-option-free (Recall that names no option), "
                        "cose, none, a `teach --out` folder or a folder in the paper's format")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "data", help="print a split's size, the fingerprint of its ordered ids and its rationale coverage",
        description="Loads one split and prints its size and a fingerprint (sha256 of the ordered question ids): "
                    "two runs used the same questions in the same order iff the fingerprints match. Validation "
                    "splits are drawn with --seed (CSQA: 1,221 of train; StrategyQA: 10%% of train; OBQA: the "
                    "official dev set). Also reports how much of the split the rationale source explains.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common(p, "validation")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N questions of the split")
    p.add_argument("--no-rationales", action="store_true", help="skip loading rationales")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run_data)

    s = subparsers.add_parser(
        "show", help="print one question with its teacher rationale(s) in the three stage formats",
        description="Prints question number --index (0-based) of a split, or the one with --id, and each of its "
                    "teacher rationales rendered as the student sees them: Recall input -> target, Analyze input "
                    "-> target for every option, Summarize input -> target.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common(s, "train")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, default=0, help="position of the question in the split")
    which.add_argument("--id", default=None, help="the question's id")
    s.add_argument("--stage-type", default=None, choices=list(stages.STAGE_TYPES),
                   help="stage formats to render (default: what the rationale has: recall and/or analyses)")
    s.set_defaults(func=run_show)


def _where(args: argparse.Namespace) -> str:
    if args.data in USER_FORMATS:
        return str(args.path)
    root = resolve_data_dir(args.data_dir)
    return str(root) if root is not None else "Hugging Face hub"


def run_data(args: argparse.Namespace) -> int:
    questions = load_questions(args.data, args.split, data_dir=args.data_dir, seed=args.seed, limit=args.limit,
                               path=args.path)
    report = {"data": args.data, "split": args.split, "seed": args.seed, "from": _where(args),
              "questions": len(questions), "fingerprint": split_fingerprint(questions)}
    if not args.no_rationales:
        source = args.source or default_source(args.data)
        report["rationale_source"] = source
        try:
            rationales = load_rationales(args.data, questions, data_dir=args.data_dir, source=source,
                                         path=args.path)
        except MissingDataError as e:
            if args.source:  # asked for by name: its absence is the answer
                raise
            report["rationales_unavailable"] = str(e)
        else:
            report["coverage"] = rationale_coverage([(q, rationales.get(q.id, [])) for q in questions])
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.data} {args.split} (seed {args.seed}) from {report['from']}")
    print(f"questions:   {report['questions']}")
    print(f"fingerprint: {report['fingerprint']}")
    if "coverage" in report:
        c = report["coverage"]
        print(f"rationales:  {report['rationale_source']}: {c['rationales']} for {c['questions']} questions; "
              f"options with an analysis {c['options_with_analysis']:.1%}, questions with a recall "
              f"{c['questions_with_recall']:.1%}")
    elif "rationales_unavailable" in report:
        print(f"rationales:  unavailable ({report['rationales_unavailable']})")
    return 0


def _pick(questions: list[Question], args: argparse.Namespace) -> Question:
    if args.id is not None:
        for q in questions:
            if q.id == args.id:
                return q
        raise ValueError(f"no question with id {args.id!r} in {args.data} {args.split}")
    if not -len(questions) <= args.index < len(questions):
        raise ValueError(f"--index {args.index} is out of range: {args.data} {args.split} has "
                         f"{len(questions)} questions")
    return questions[args.index]


def _stage_type(r: Rationale) -> str:
    has_recall = bool((r.recall or "").strip())
    if r.analyses:
        return "recall_analyze_summarize" if has_recall else "analyze_summarize"
    return "recall_summarize" if has_recall else "summarize"


def _block(title: str, text: str) -> str:
    return f"  {title}:\n" + textwrap.indent(text, "    | ")


def render_rationale(q: Question, r: Rationale, stage_type: str | None = None) -> str:
    """The stage inputs and targets this rationale trains, as text (stages.py does all the formatting)."""
    stage_type = stage_type or _stage_type(r)
    out = []
    if stages.uses(stage_type, stages.RECALL):
        out += ["[Recall]", _block("input", stages.recall_input(q)), _block("target", r.recall or "")]
    if stages.uses(stage_type, stages.ANALYZE):
        for label in q.labels:
            text = r.analyses.get(label)
            out += [f"[Analyze option {label}]", _block("input", stages.analyze_input(q, r.recall, label, stage_type)),
                    _block("target", text if text else "(no explanation for this option in this rationale)")]
    answer = q.answer or "?"
    out += ["[Summarize]", _block("input", stages.summarize_input(q, r.recall, r.analyses, stage_type)),
            _block("target", stages.summarize_target(answer))]
    return "\n".join(out)


def run_show(args: argparse.Namespace) -> int:
    questions = load_questions(args.data, args.split, data_dir=args.data_dir, seed=args.seed, path=args.path)
    q = _pick(questions, args)
    source = args.source or default_source(args.data)
    rationales = load_rationales(args.data, [q], data_dir=args.data_dir, source=source, path=args.path).get(q.id, [])
    print(f"{args.data} {args.split} #{questions.index(q)}  id {q.id}")
    print(q.stem)
    for o in q.options:
        print(f"  ({o.label}) {o.text}" + ("   <- answer" if o.label == q.answer else ""))
    extras = {k: v for k, v in q.meta.items() if k in ("fact1", "facts", "decomposition", "term", "description")}
    for k, v in extras.items():
        print(f"  {k}: {v}")
    if not rationales:
        print(f"\nno {source} rationale for this question")
        return 0
    for i, r in enumerate(rationales, start=1):
        notes = {k: v for k, v in r.meta.items() if k in ("recall_from", "matched") and v}
        print(f"\n=== rationale {i}/{len(rationales)} ({r.source}" + (f"; {notes}" if notes else "") + ")")
        print(render_rationale(q, r, args.stage_type))
    return 0
