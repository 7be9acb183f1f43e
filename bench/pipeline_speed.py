"""Naive vs batched staged inference: same student, same CSQA validation questions, same greedy decoding.

naive:   one generate call per question for Recall, one per (question, option) for Analyze, one per question
         for Summarize: what a straightforward loop over the paper's stages does.
batched: `tinythinker.pipeline.run_pipeline`: per batch of questions one Recall call, one Analyze call for all
         options of all questions, one Summarize call.

The two must agree on every greedy prediction (the script fails otherwise) and, up to float rounding across
batch shapes, on every stage's text. The machine is shared, so the two runs alternate over blocks of questions
and each method's time is the sum over its blocks: a load spike then hurts both, not one. One torch thread by
default (see --threads).

    .venv/bin/python bench/pipeline_speed.py --student runs/p1-ras-lora --limit 32 --batch-size 16 --blocks 2

batched also shares prefixes: Analyze's inputs of one question are encoded once (`Student.generate_shared`) and
score mode encodes the Summarize input once for all candidates (`Student.score_candidates`).

--int8 adds a third leg in the same blocks: the batched pipeline on an int8 copy of the student
(`Student.quantize_int8`), with its ratio to naive and its agreement with the fp32 predictions (reported, not
held to --min-agreement: int8 is not meant to be token-identical).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinythinker import stages  # noqa: E402
from tinythinker.data import load_questions  # noqa: E402
from tinythinker.pipeline import GREEDY, accuracy, run_pipeline  # noqa: E402
from tinythinker.students import load_student  # noqa: E402
from tinythinker.types import Question, Trace  # noqa: E402


def naive_trace(student, q: Question, restrict_answer: bool | str) -> Trace:
    """The staged pipeline written as the obvious loop: one input per generate call, and in score mode one
    forward pass per (input, candidate answer)."""
    def gen(text: str, stage: str) -> str:
        sc = GREEDY.stage(stage)
        return student.generate([text], max_new_tokens=sc.max_new_tokens)[0]

    recall = gen(stages.recall_input(q), stages.RECALL)
    analyses = {lab: gen(stages.analyze_input(q, recall, lab), stages.ANALYZE) for lab in q.labels}
    prompt = stages.summarize_input(q, recall, analyses)
    formats = (student.answer_format,) if student.answer_format else None
    choices = stages.answer_choices(q, formats)
    if restrict_answer == "score":
        lengths = [len(x) for x in student.target_ids(choices)]
        with torch.no_grad():
            sums = student.sequence_logprobs([prompt] * len(choices), choices).tolist()
        summary = choices[max(range(len(choices)), key=lambda i: sums[i] / lengths[i])]
    elif restrict_answer:
        summary = choices[student.generate_choice([prompt], [choices])[0]]
    else:
        summary = gen(prompt, stages.SUMMARIZE)
    predicted = stages.parse_answer(summary, q.labels)
    return Trace(q, recall, analyses, summary, predicted, predicted == q.answer)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default=None,
                    help="default: the best shipped phase-1 student (trained: an untrained one writes every "
                         "stage to its length limit, and its near-tied answers flip under batching)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=200, help="CSQA validation questions")
    ap.add_argument("--batch-size", type=int, default=50,
                    help="questions per batch (Analyze then decodes 5x as many rows in one call)")
    ap.add_argument("--blocks", type=int, default=4,
                    help="alternate naive and batched over this many blocks (best a multiple of the batch size: "
                         "a block's last, partial batch amortises less)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 by default because on a shared 2-core machine a second thread mostly "
                         "spins (measured 5x slower for both methods with 2 under load); 0 = torch's choice")
    ap.add_argument("--answer", choices=("score", "constrain", "free"), default="score",
                    help="how Summarize answers (default: score, the recipe of record; every prediction is a "
                         "letter, so the comparison has teeth)")
    ap.add_argument("--min-agreement", type=float, default=0.99,
                    help="fail below this share of identical predictions (near-ties may flip under batching: "
                         "float sums in another order)")
    ap.add_argument("--int8", action="store_true", help="also time the batched pipeline with int8 weights")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "pipeline_speed.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    restrict = False if args.answer == "free" else args.answer
    if args.student is None:
        from tinythinker.shipped import best_phase1_name

        args.student = best_phase1_name(fallback="minilm-bert2bert")

    questions = load_questions("csqa", "validation", data_dir=args.data_dir, limit=args.limit)
    student = load_student(args.student, device="cpu").merge_adapter()
    student.generate([stages.recall_input(questions[0])], max_new_tokens=2)  # warm-up, not timed
    int8 = dataclasses.replace(student).quantize_int8() if args.int8 else None  # a copy: quantize_dynamic copies
    if int8 is not None:
        int8.generate([stages.recall_input(questions[0])], max_new_tokens=2)

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    size = -(-len(questions) // args.blocks)
    naive, batched, batched_int8, blocks = [], [], [], []
    for b in range(0, len(questions), size):
        block = questions[b:b + size]
        t0 = time.perf_counter()
        naive += [naive_trace(student, q, restrict) for q in block]
        t1 = time.perf_counter()
        batched += run_pipeline(student, block, batch_size=args.batch_size, restrict_answer=restrict)
        t2 = time.perf_counter()
        blocks.append({"questions": len(block), "naive_s": round(t1 - t0, 2), "batched_s": round(t2 - t1, 2)})
        if int8 is not None:
            batched_int8 += run_pipeline(int8, block, batch_size=args.batch_size, restrict_answer=restrict)
            blocks[-1]["batched_int8_s"] = round(time.perf_counter() - t2, 2)
        print(f"block {len(blocks)}: {len(block)} questions, naive {t1 - t0:.1f} s, batched {t2 - t1:.1f} s"
              + (f", batched int8 {blocks[-1]['batched_int8_s']:.1f} s" if int8 is not None else ""), flush=True)

    naive_s = sum(x["naive_s"] for x in blocks)
    batched_s = sum(x["batched_s"] for x in blocks)
    same_pred = [a.predicted == b.predicted for a, b in zip(naive, batched, strict=True)]
    same_text = [(a.recall, a.analyses, a.summary) == (b.recall, b.analyses, b.summary)
                 for a, b in zip(naive, batched, strict=True)]
    result = {
        "student": args.student, "data": "csqa validation", "questions": len(questions),
        "batch_size": args.batch_size, "restrict_answer": restrict, "torch_threads": torch.get_num_threads(),
        "max_new_tokens": {s: GREEDY.stage(s).max_new_tokens for s in stages.STAGES},
        "naive": {"seconds": round(naive_s, 1), "questions_per_second": round(len(questions) / naive_s, 3),
                  **accuracy(naive)},
        "batched": {"seconds": round(batched_s, 1), "questions_per_second": round(len(questions) / batched_s, 3),
                    **accuracy(batched)},
        "ratio": round(naive_s / batched_s, 2),
        "speedup": round(naive_s / batched_s, 2),  # the older name of "ratio", kept for earlier readers
        "identical_predictions": all(same_pred),
        "agreement": sum(same_pred) / len(same_pred),
        "differing": [{"id": q.id, "naive": a.predicted, "batched": b.predicted}
                      for q, a, b, ok in zip(questions, naive, batched, same_pred, strict=True) if not ok],
        "identical_stage_texts": sum(same_text) / len(same_text),
        "blocks": blocks,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "command": "python " + " ".join(sys.argv),
        "load_average_at_start": load_at_start,
    }
    if int8 is not None:
        int8_s = sum(x["batched_int8_s"] for x in blocks)
        same_int8 = [a.predicted == b.predicted for a, b in zip(naive, batched_int8, strict=True)]
        result["int8"] = {"seconds": round(int8_s, 1), "ratio": round(naive_s / int8_s, 2),
                          "agreement_with_fp32": sum(same_int8) / len(same_int8), **accuracy(batched_int8)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if result["agreement"] < args.min_agreement:
        bad = [d["id"] for d in result["differing"]]
        print(f"FAIL: batched and naive predictions differ on {len(bad)} questions: {bad[:10]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
