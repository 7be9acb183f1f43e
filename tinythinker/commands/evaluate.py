"""`python -m tinythinker evaluate`: run the staged pipeline on a split, print accuracy, write every trace."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

from tinythinker import DEFAULT_STUDENT, stages
from tinythinker.data import BENCHMARKS, ENV_DATA_DIR, SPLITS, USER_FORMATS, load_questions

DEFAULT_OUT_DIR = Path("runs") / "evaluate"


def register(subparsers) -> None:
    from tinythinker.pipeline import ANALYZE_TOKENS, RECALL_TOKENS, SUMMARIZE_TOKENS

    p = subparsers.add_parser(
        "evaluate", help="run the staged pipeline on a split: accuracy, invalid answers, speed, traces JSONL",
        description="Loads a student and a split, runs Recall -> Analyze -> Summarize (batched; greedy unless a "
                    "sampling flag is given), prints accuracy, the invalid-answer rate and questions/second, and "
                    "writes every trace to a JSONL file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--student", default=DEFAULT_STUDENT,
                   help="minilm-bert2bert, smollm2-135m, a student or run folder, or a hub id")
    p.add_argument("--data", default="csqa", choices=BENCHMARKS + USER_FORMATS)
    p.add_argument("--split", default="validation", choices=SPLITS)
    p.add_argument("--limit", type=int, default=None, help="only the first N questions of the split")
    p.add_argument("--data-dir", default=None, help=f"local data folder (default: ${ENV_DATA_DIR})")
    p.add_argument("--path", default=None, help="with --data jsonl / paper: your file or folder")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, and of the validation split unless "
                                                          "--split-seed is given")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the train/validation split (default: --seed, as before it existed): new samples "
                        "of the same questions with another --seed, e.g. to add to a self-consistency run")
    p.add_argument("--stage-type", default=stages.DEFAULT_STAGE_TYPE, choices=list(stages.STAGE_TYPES))
    p.add_argument("--batch-size", type=int, default=16, help="questions per generate call")
    p.add_argument("--from-stage", default=None, choices=[stages.ANALYZE, stages.SUMMARIZE],
                   help="the stages before this one are the teacher's (the rationale source's) texts, this and "
                        "later ones are generated: how much does the student's answer depend on what it is given? "
                        "Questions the source does not cover are skipped and counted")
    p.add_argument("--source", default=None, help="with --from-stage: rationale source (default: the data's own)")
    p.add_argument("--out", default=None,
                   help=f"traces JSONL (default: {DEFAULT_OUT_DIR}/<student>-<data>-<split>-<time>.jsonl)")
    p.add_argument("--resume", action="store_true",
                   help="keep the traces already in --out (written by the same student, stage type, sampling and "
                        "answer mode, and with --from-stage given the same teacher texts, else an error naming the "
                        "line) and run only the questions they lack. --out "
                        "is rewritten after every batch, so an interrupted evaluation resumes where it stopped. "
                        "Greedy traces do not depend on the batching; resumed sampled runs draw the rest with "
                        "other batch seeds than an unbroken run would")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is often faster on a busy shared machine)")
    p.add_argument("--unseen-by", nargs="+", default=None, metavar="RUN",
                   help="keep only the questions none of these runs (nor the runs they continued) trained on: a "
                        "clean comparison of models whose training splits differ")
    p.add_argument("--int8", action="store_true",
                   help="CPU only: int8 weights (dynamic quantization), about 1.8x faster staged decoding, but "
                        "different answers (on p1-equal 63.5%% of 200 changed; bench/RESULTS.md measures both)")
    g = p.add_argument_group("sampling (any of these turns sampling on for --sample-stages)")
    g.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 1.0)")
    g.add_argument("--top-k", type=int, default=None, help="top-k (0 = off)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus top-p (1.0 = off)")
    g.add_argument("--num-samples", type=int, default=1,
                   help="traces per question; > 1 also reports self-consistency (majority vote) accuracy")
    g.add_argument("--sample-stages", default="recall,analyze",
                   help="comma-separated stages to sample; the others stay greedy (the paper samples recall and "
                        "analyze, never summarize)")
    g.add_argument("--restrict-answer", nargs="?", const="constrain", default=False,
                   choices=("constrain", "score"),
                   help="Summarize may only write one of the question's valid answers: 'constrain' (bare flag) "
                        "decodes in a prefix tree of them, 'score' picks the best by mean log-likelihood")
    g.add_argument("--recall-tokens", type=int, default=RECALL_TOKENS, help="max new tokens of Recall")
    g.add_argument("--analyze-tokens", type=int, default=ANALYZE_TOKENS, help="max new tokens per Analyze")
    g.add_argument("--summarize-tokens", type=int, default=SUMMARIZE_TOKENS, help="max new tokens of Summarize")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run)


def sampling_from_args(args: argparse.Namespace):
    from tinythinker.pipeline import Sampling

    sample = (args.num_samples > 1 or args.temperature is not None or args.top_k is not None
              or args.top_p is not None)
    if sample:
        names = tuple(s.strip() for s in args.sample_stages.split(",") if s.strip())
        sampling = Sampling.sampled(
            temperature=1.0 if args.temperature is None else args.temperature,
            top_k=args.top_k or 0, top_p=1.0 if args.top_p is None else args.top_p, seed=args.seed,
            sample_stages=names)
    else:
        sampling = Sampling(seed=args.seed)
    sampling.recall = replace(sampling.recall, max_new_tokens=args.recall_tokens)
    sampling.analyze = replace(sampling.analyze, max_new_tokens=args.analyze_tokens)
    sampling.summarize = replace(sampling.summarize, max_new_tokens=args.summarize_tokens)
    return sampling


def teacher_context(questions, args: argparse.Namespace):
    """Traces holding the teacher's texts for the stages of `args.stage_type` before `args.from_stage`: the first
    rationale of each question that has all of them. Uncovered questions are left out (the caller counts them)."""
    from tinythinker.data import load_rationales
    from tinythinker.types import Trace

    order = stages.stages_of(args.stage_type)
    if args.from_stage not in order:
        raise ValueError(f"stage type {args.stage_type!r} has no {args.from_stage!r} stage to start from")
    kept = order[:order.index(args.from_stage)]
    if not kept:
        raise ValueError(f"--from-stage {args.from_stage} with stage type {args.stage_type!r} gives the student "
                         "nothing from the teacher; drop --from-stage")
    rationales = load_rationales(args.data, questions, data_dir=args.data_dir, source=args.source, path=args.path)
    given = []
    for q in questions:
        for r in rationales.get(q.id, []):
            if stages.RECALL in kept and not r.recall:
                continue
            if stages.ANALYZE in kept and any(not r.analyses.get(lab) for lab in q.labels):
                continue
            given.append(Trace(question=q, recall=r.recall, analyses=dict(r.analyses), summary="", predicted=None,
                               correct=None))
            break
    if not given:
        raise ValueError(f"the rationale source covers none of the {len(questions)} questions with what "
                         f"--from-stage {args.from_stage} needs")
    return given


def resumable(out: Path, questions, given, model: str, sampling, args: argparse.Namespace) -> list:
    """The traces of `out` this run keeps (`traces_to_resume`); with --from-stage each must also hold the
    teacher's texts it is given now, or it came from another source or stage."""
    from tinythinker.traces import traces_to_resume

    settings = {**sampling.to_dict(), "num_samples": args.num_samples, "restrict_answer": args.restrict_answer}
    teacher = {t.question.id: t for t in given} if given is not None else {}

    def same_teacher_texts(t) -> str | None:
        g = teacher[t.question.id]  # traces_to_resume has checked that every line's question is here
        if t.recall != g.recall or (args.from_stage == stages.SUMMARIZE and t.analyses != g.analyses):
            return (f"not the teacher's texts before {args.from_stage} that this run gives (another --source or "
                    "--from-stage?)")
        return None

    return traces_to_resume(out, questions, model, args.stage_type, settings, args.num_samples,
                            check=same_teacher_texts if given is not None else None)


def default_out(student: str, data: str, split: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(student.rstrip("/")).name or student).strip("_") or "student"
    return DEFAULT_OUT_DIR / f"{name}-{data}-{split}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tinythinker.pipeline import accuracy, run_pipeline, write_traces
    from tinythinker.students import load_student

    if args.batch_size < 1 or args.num_samples < 1:
        raise ValueError("--batch-size and --num-samples must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    sampling = sampling_from_args(args)  # bad flags fail before the slow loads
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError("--threads must be >= 1")
        import torch

        torch.set_num_threads(args.threads)
    split_seed = args.seed if args.split_seed is None else args.split_seed
    questions = load_questions(args.data, args.split, data_dir=args.data_dir, seed=split_seed, limit=args.limit,
                               path=args.path)
    if args.unseen_by:
        from tinythinker.runs import run_of, trained_questions

        seen: set[str] = set()
        for run in args.unseen_by:
            if run_of(run) is None:
                raise ValueError(f"--unseen-by {run}: not a run folder or a checkpoint of one")
            seen |= trained_questions(run)
        unseen = [q for q in questions if q.id not in seen]
        print(f"--unseen-by: {len(unseen)} of {len(questions)} questions were trained on by none of "
              f"{', '.join(args.unseen_by)}", file=sys.stderr)
        questions = unseen
    if not questions:
        raise ValueError(f"{args.data} {args.split} has no questions" + (" that --unseen-by leaves" if args.unseen_by
                                                                         else ""))
    if args.resume and args.out is None:
        raise ValueError("--resume needs the --out of the run to continue")
    out = Path(args.out) if args.out else default_out(args.student, args.data, args.split)
    given = teacher_context(questions, args) if args.from_stage else None
    skipped = len(questions) - len(given) if given is not None else 0
    if given is not None:
        questions = [t.question for t in given]
    # Evaluation only generates: a LoRA adapter is folded into its base (one matmul per layer, not three).
    student = load_student(args.student, device=args.device).merge_adapter()
    if args.int8:
        student.quantize_int8()
    kept: list = []
    if args.resume and out.exists():
        kept = resumable(out, questions, given, student.name, sampling, args)
    done = {t.question.id for t in kept}
    if args.resume:
        print(f"--resume: {len(done)} of {len(questions)} questions already in {out}", file=sys.stderr)
    saved = list(kept)

    def save(batch) -> None:  # after every batch: an interrupted run keeps what it did (see --resume)
        saved.extend(batch)
        write_traces(out, saved)

    bar = tqdm(total=(len(questions) - len(done)) * args.num_samples, desc="evaluate", unit="trace",
               file=sys.stderr)

    def progress(n: int, total: int) -> None:
        bar.update(n - bar.n)

    common = dict(stage_type=args.stage_type, sampling=sampling, batch_size=args.batch_size,
                  num_samples=args.num_samples, restrict_answer=args.restrict_answer, on_progress=progress,
                  on_traces=save)
    start = time.perf_counter()
    if given is not None:
        from tinythinker.pipeline import complete_traces

        new = complete_traces(student, [t for t in given if t.question.id not in done], args.from_stage, **common)
    else:
        new = run_pipeline(student, [q for q in questions if q.id not in done], **common)
    seconds = time.perf_counter() - start
    bar.close()
    position = {q.id: i for i, q in enumerate(questions)}
    traces = sorted(kept + new, key=lambda t: (position[t.question.id], t.sampling.get("sample_index", 0)))
    write_traces(out, traces)
    ran = len(questions) - len(done)  # questions/second counts only what this call ran

    result = {
        "student": args.student, "data": args.data, "split": args.split, "stage_type": args.stage_type,
        "questions": len(questions), **accuracy(traces), "seconds": round(seconds, 2),
        "questions_per_second": round(ran / seconds, 3) if ran else None, "traces": str(out),
        "resumed_questions": len(done),
        "sampling": sampling.to_dict(), "num_samples": args.num_samples, "restrict_answer": args.restrict_answer,
        "from_stage": args.from_stage, "skipped_uncovered": skipped, "weights": student.quantized or "fp32",
        "unseen_by": args.unseen_by, "split_seed": split_seed,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    weights = f" ({student.quantized})" if student.quantized else ""
    print(f"{args.student}{weights} on {args.data} {args.split} ({len(questions)} questions, {args.stage_type}, "
          f"{'greedy' if sampling.is_greedy else 'sampled'}{f', answers: {args.restrict_answer}' if args.restrict_answer else ''})")
    print(f"accuracy:           {result['accuracy']:.1%}")
    if "self_consistency_accuracy" in result:
        print(f"self-consistency:   {result['self_consistency_accuracy']:.1%} "
              f"(majority of {args.num_samples} samples)")
    print(f"invalid answers:    {result['invalid_rate']:.1%}")
    print(f"top-answer share:   {result['top_answer_share']:.1%} (the most common letter's share)")
    if args.from_stage:
        print(f"teacher's texts before {args.from_stage}; {skipped} questions without them skipped")
    if ran:
        print(f"questions/second:   {result['questions_per_second']:.3f} ({ran} questions in {seconds:.1f} s)")
    if done:
        print(f"resumed:            {len(done)} questions kept from {out}")
    print(f"traces:             {out}")
    return 0
