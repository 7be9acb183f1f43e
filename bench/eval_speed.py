"""Score-mode evaluation, the old path against the new, on the same student and the same questions.

old: every valid answer of every answer format (3 x options candidates) scored as its own (input, candidate)
     sequence, logits and log-softmax over the full vocabulary at every position (what `sequence_logprobs`
     did before issue 12).
new: `run_pipeline(..., restrict_answer="score")`: the Summarize input encoded once per question, its key/value
     cache expanded over the candidates (`Student.score_candidates`), only the answer format the run was
     trained on scored.
Agreement is checked on the same candidate set: the new scorer with every format against the old one. Each
path runs in its own child process so that its peak RSS is its own.

    .venv/bin/python bench/eval_speed.py --student runs/p1-sum-lora --limit 300
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinythinker import stages  # noqa: E402
from tinythinker.data import load_questions  # noqa: E402
from tinythinker.students import load_student  # noqa: E402


def full_width_logprobs(student, prompts, completions):
    """The pre-issue-12 scorer: full-vocabulary logits and log-softmax over every position."""
    feats = student.encode(prompts, completions)
    batch = student.collator()([{k: feats[k][i] for k in feats} for i in range(len(prompts))])
    labels = batch.pop("labels")
    if student.kind == "seq2seq":
        dec = student.model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = student.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               decoder_input_ids=dec).logits
    else:
        logits = student.model(**batch).logits[:, :-1]
        labels = labels[:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)


def old_scores(student, inputs, choices, chunk=64):
    pairs = [(inp, c) for inp, cs in zip(inputs, choices, strict=True) for c in cs]
    lengths = [len(x) for x in student.target_ids([c for _, c in pairs])]
    flat = []
    with torch.no_grad():
        for i in range(0, len(pairs), chunk):
            part = pairs[i:i + chunk]
            flat += full_width_logprobs(student, [p[0] for p in part], [p[1] for p in part]).tolist()
    means = [s / n for s, n in zip(flat, lengths, strict=True)]
    out, k = [], 0
    for cs in choices:
        out.append(means[k:k + len(cs)])
        k += len(cs)
    return out


def child(args) -> dict:
    torch.set_num_threads(args.threads)
    questions = load_questions("csqa", "validation", data_dir=args.data_dir, limit=args.limit)
    student = load_student(args.student, device="cpu").merge_adapter()
    inputs = [stages.summarize_input(q, stage_type="summarize") for q in questions]
    all_formats = [stages.answer_choices(q) for q in questions]
    trained = [stages.answer_choices(q, (student.answer_format,) if student.answer_format else None)
               for q in questions]
    start = time.perf_counter()
    if args.path == "old":
        rows = old_scores(student, inputs, all_formats)
        picks = [all_formats[i][max(range(len(r)), key=r.__getitem__)] for i, r in enumerate(rows)]
    elif args.path == "new":
        rows = []
        for i in range(0, len(inputs), 16):
            rows += student.score_candidates(inputs[i:i + 16], trained[i:i + 16])
        picks = [trained[i][max(range(len(r)), key=r.__getitem__)] for i, r in enumerate(rows)]
    else:  # new scorer, old candidate set: the agreement check
        rows = []
        for i in range(0, len(inputs), 16):
            rows += student.score_candidates(inputs[i:i + 16], all_formats[i:i + 16])
        picks = [all_formats[i][max(range(len(r)), key=r.__getitem__)] for i, r in enumerate(rows)]
    seconds = time.perf_counter() - start
    letters = [stages.parse_answer(p, q.labels) for p, q in zip(picks, questions, strict=True)]
    return {"path": args.path, "seconds": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "accuracy": sum(a == q.answer for a, q in zip(letters, questions, strict=True)) / len(questions),
            "letters": letters}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="an answer-only (summarize) checkpoint")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--path", choices=("old", "new", "same_set"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "eval_speed.json"))
    args = ap.parse_args()
    if args.path:
        print(json.dumps(child(args)))
        return 0
    runs = {}
    for path in ("new", "same_set", "old"):
        cmd = [sys.executable, __file__, "--student", args.student, "--data-dir", args.data_dir, "--limit",
               str(args.limit), "--threads", str(args.threads), "--path", path]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        runs[path] = json.loads(out.strip().splitlines()[-1])
    same = sum(a == b for a, b in zip(runs["old"]["letters"], runs["same_set"]["letters"], strict=True))
    result = {
        "command": f"python bench/eval_speed.py --student {args.student} --limit {args.limit}",
        "student": args.student, "questions": args.limit, "threads": args.threads, "cpus": len(
            __import__("os").sched_getaffinity(0)), "machine": platform.processor() or platform.machine(),
        "old_s": runs["old"]["seconds"], "new_s": runs["new"]["seconds"],
        "ratio": round(runs["old"]["seconds"] / runs["new"]["seconds"], 2),
        "old_peak_rss_mb": runs["old"]["peak_rss_mb"], "new_peak_rss_mb": runs["new"]["peak_rss_mb"],
        "same_candidate_set_agreement": same / args.limit,
        "old_accuracy": runs["old"]["accuracy"], "new_accuracy": runs["new"]["accuracy"],
        "same_set_new_scorer_s": runs["same_set"]["seconds"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if same == args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
