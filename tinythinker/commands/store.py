"""`python -m tinythinker store ...`: the annotation store from scripts, the same calls the app's Annotate tab makes.

    store import traces.jsonl --model runs/csqa-p1 --iteration 0
    store next --model runs/csqa-p1 --correct no --annotator ana
    store label 12 --stage analyze --option B --verdict bad --text "..." --annotator ana
    store undo --annotator ana
    store stats
    store export --format hf --out annotations/reflection-v1
    store export --out annotations/reflection-v1 --push-to-hub user/tinythinker-pairs
    store import-pairs annotations/reflection-v1

Every subcommand takes --db PATH (default: $TINYTHINKER_DB, else annotations/tinythinker.db).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tinythinker import stages


def _store(args: argparse.Namespace, create: bool = True):
    """The store at --db. Commands that only read or label pass create=False: a mistyped --db is then an error
    instead of a new empty database."""
    from tinythinker.store import Store

    return Store(args.db, create=create)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _show(stored, labels) -> None:
    t = stored.trace
    q = t.question
    verdict = {True: "right", False: "wrong", None: "unknown"}[t.correct]
    print(f"trace {stored.id}   model {stored.model}   iteration {stored.iteration}   stage type {t.stage_type}")
    print(f"question {q.id}: {q.stem}")
    for o in q.options:
        print(f"    {o.label}. {o.text}")
    print(f"answer {q.answer}   predicted {t.predicted}   ({verdict})")
    if stages.uses(t.stage_type, stages.RECALL):
        print(f"[recall]    {t.recall}")
    if stages.uses(t.stage_type, stages.ANALYZE):
        for label in q.labels:
            if label in t.analyses:
                print(f"[analyze {label}] {t.analyses[label]}")
    print(f"[summarize] {t.summary}")
    for lab in labels:
        target = lab.stage + (f" {lab.option}" if lab.option else "")
        extra = "".join([f"  text: {lab.text!r}" if lab.text else "", f"  note: {lab.note!r}" if lab.note else "",
                         "  (undone)" if lab.undone else ""])
        print(f"  label #{lab.id} {target}: {lab.verdict} by {lab.annotator} at {lab.created_at}{extra}")


def cmd_import(args: argparse.Namespace) -> int:
    skip = args.skip_duplicates or args.allow_duplicate
    with _store(args) as s:
        ids = s.import_file(args.path, model=args.model, iteration=args.iteration,
                            on_duplicate="skip" if skip else "refuse")
    span = f" (ids {ids[0]}..{ids[-1]})" if ids else ""
    dups = (f"; skipped {ids.duplicates} duplicates ({ids.duplicates_in_input} repeated in the file, "
            f"{ids.duplicates_in_store} already in the store)" if ids.duplicates else "")
    print(f"imported {len(ids)} traces from {args.path} into {s.path}{span}{dups}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    with _store(args, create=False) as s:
        lab = s.label(args.trace_id, args.stage, args.verdict, text=args.text, note=args.note,
                      annotator=args.annotator, option=args.option)
    target = lab.stage + (f" {lab.option}" if lab.option else "")
    print(f"label #{lab.id}: trace {lab.trace_id} {target} {lab.verdict} by {lab.annotator}")
    return 0


def cmd_undo(args: argparse.Namespace) -> int:
    with _store(args, create=False) as s:
        lab = s.undo_last(args.annotator)
    if lab is None:
        print(f"nothing to undo: {args.annotator} has no label in force", file=sys.stderr)
        return 1
    target = lab.stage + (f" {lab.option}" if lab.option else "")
    print(f"undid label #{lab.id}: trace {lab.trace_id} {target} {lab.verdict} (history keeps it, marked undone)")
    return 0


def cmd_skip(args: argparse.Namespace) -> int:
    with _store(args, create=False) as s:
        s.skip(args.trace_id, args.annotator)
    print(f"skipped trace {args.trace_id} for {args.annotator}")
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    correct = None if args.correct is None else args.correct == "yes"
    with _store(args, create=False) as s:
        stored = s.next_unlabelled(model=args.model, iteration=args.iteration, correct=correct,
                                   disagree=tuple(args.disagree) if args.disagree else None,
                                   annotator=args.annotator, per_annotator=args.per_annotator,
                                   include_skipped=args.include_skipped)
        labels = s.labels(stored.id, include_undone=True) if stored else []
    if stored is None:
        print("the queue is empty for these filters", file=sys.stderr)
        return 1
    if args.json:
        _print_json(stored.to_dict())
    else:
        _show(stored, labels)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _store(args, create=False) as s:
        stored = s.get_trace(args.trace_id)
        labels = s.labels(args.trace_id, include_undone=True)
    if args.json:
        _print_json({**stored.to_dict(), "labels": [lab.to_dict() for lab in labels]})
    else:
        _show(stored, labels)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _store(args, create=False) as s:
        st = s.stats()
    if args.json:
        _print_json(st)
        return 0
    print(f"{st['db']} (schema v{st['schema_version']}): {st['traces']} traces of {st['questions']} questions, "
          f"{st['models']} models")
    if st.get("legacy_duplicates"):
        print(f"  {st['legacy_duplicates']} of them repeat another trace: stored before the store made traces unique "
              "(schema 0004), kept with their labels")
    head = ("model", "iter", "traces", "right", "wrong", "unknown", "labelled", "unlabelled")
    rows = [(r["model"], r["iteration"], r["traces"], r["correct"], r["wrong"], r["unknown"], r["labelled"],
             r["unlabelled"]) for r in st["by_model_iteration"]]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    for row in (head, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
    lab = st["labels"]
    print(f"labels in force {lab['in_force']} (history {lab['history']}, undone {lab['undone']}), "
          f"skips {st['skips']}")
    for r in lab["by_stage_verdict"]:
        print(f"    {r['stage']:<10} {r['verdict']:<7} {r['n']}  (with corrected text {r['corrected']})")
    if lab["annotators"]:
        print("annotators: " + ", ".join(f"{k} {v}" for k, v in lab["annotators"].items()))
    stored = ", ".join(f"{k} {v}" for k, v in st["pairs"]["stored"].items()) or "none"
    print(f"pairs: curated from labels {st['pairs']['curated_from_labels']}; stored {stored}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tinythinker.store.validate import StoreError

    fmt = args.format or ("hf" if args.push_to_hub else "jsonl")
    if args.push_to_hub and fmt != "hf":
        raise StoreError("--push-to-hub pushes a datasets-format export: use --format hf (or leave --format out)")
    with _store(args, create=False) as s:
        m = s.export(args.out, fmt=fmt, pairs=args.pairs, overwrite=args.overwrite)
    print(f"exported {m['pairs']} {args.pairs} pairs and {m['traces']} labelled traces ({m['labels']} labels) "
          f"to {args.out} as {fmt}, with its dataset card")
    if args.push_to_hub:
        from tinythinker.store.hub import push_export

        url = push_export(args.out, args.push_to_hub, private=True if args.private else None)
        print(f"pushed it to {url}")
    return 0


def cmd_import_pairs(args: argparse.Namespace) -> int:
    with _store(args) as s:
        n = s.import_pairs(args.path)
    print(f"imported {n} new pairs from {args.path} into {s.path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("store", help="annotation store: import traces, label them, export preference pairs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="store_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=None,
                        help="SQLite file (default: $TINYTHINKER_DB, else annotations/tinythinker.db)")

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    sp = add("import", cmd_import, "file traces from a JSONL file (evaluate --out) or a store export")
    sp.add_argument("path")
    sp.add_argument("--model", help="model name to file them under (default: each trace's 'model' field)")
    sp.add_argument("--iteration", type=int, default=None,
                    help="self-reflection iteration (default: the export's, else 0)")
    sp.add_argument("--skip-duplicates", action="store_true",
                    help="import the new traces and skip (and count) those already stored or repeated in the file; "
                         "by default any duplicate refuses the whole file. A trace is the same trace when model, "
                         "iteration, question, stage texts and sampling agree")
    sp.add_argument("--allow-duplicate", action="store_true", help=argparse.SUPPRESS)  # the old name

    sp = add("label", cmd_label, "label one stage of a trace (one transaction)")
    sp.add_argument("trace_id", type=int)
    sp.add_argument("--stage", required=True, choices=stages.STAGES)
    sp.add_argument("--option", help="the option whose analysis is labelled (analyze stage only)")
    sp.add_argument("--verdict", required=True, choices=("good", "bad", "unsure"))
    sp.add_argument("--text", help="corrected text for the stage (counts as a good text)")
    sp.add_argument("--note")
    sp.add_argument("--annotator", required=True)

    sp = add("undo", cmd_undo, "retract the annotator's latest label still in force (history keeps it)")
    sp.add_argument("--annotator", required=True)

    sp = add("skip", cmd_skip, "leave a trace out of the annotator's queue")
    sp.add_argument("trace_id", type=int)
    sp.add_argument("--annotator", required=True)

    sp = add("next", cmd_next, "show the next unlabelled trace")
    sp.add_argument("--model")
    sp.add_argument("--iteration", type=int)
    sp.add_argument("--correct", choices=("yes", "no"))
    sp.add_argument("--disagree", nargs=2, metavar=("MODEL_A", "MODEL_B"),
                    help="questions where two models (NAME or NAME@ITERATION) predicted differently")
    sp.add_argument("--annotator", help="leave out this annotator's skipped traces")
    sp.add_argument("--per-annotator", action="store_true",
                    help="unlabelled by this annotator, whatever others did (double annotation)")
    sp.add_argument("--include-skipped", action="store_true")
    sp.add_argument("--json", action="store_true")

    sp = add("show", cmd_show, "show one trace with its label history")
    sp.add_argument("trace_id", type=int)
    sp.add_argument("--json", action="store_true")

    sp = add("stats", cmd_stats, "counts by model, iteration, correctness and label status")
    sp.add_argument("--json", action="store_true")

    sp = add("export", cmd_export, "write preference pairs and labelled traces as JSONL or a datasets folder")
    sp.add_argument("--format", choices=("jsonl", "hf"), default=None,
                    help="jsonl (the default), or hf: datasets.save_to_disk folders (the default with --push-to-hub)")
    sp.add_argument("--out", required=True)
    sp.add_argument("--pairs", choices=("curated", "auto", "all"), default="curated",
                    help="curated: from labels (and imported curated pairs); auto: phase 2's; all: both")
    sp.add_argument("--overwrite", action="store_true", help="replace a non-empty export folder")
    sp.add_argument("--push-to-hub", metavar="REPO_ID",
                    help="then push the export (pairs and traces as two configs, and the dataset card) to this "
                         "Hugging Face dataset repository (token: HF_TOKEN or `hf auth login`); where the Hub "
                         "cannot be reached this fails at once and the local export stays complete")
    sp.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")

    sp = add("import-pairs", cmd_import_pairs, "store pairs from an export (JSONL or datasets folder)")
    sp.add_argument("path")
