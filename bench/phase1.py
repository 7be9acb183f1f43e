"""Phase 1 benchmark: does the student learn, and do three stages beat answer-only on the same budget?

Each experiment is one `python -m tinythinker train ...` child process (so its wall time and peak memory are its
own, and its exact command is recorded); results are merged into bench/out/phase1.json as they finish:

    {"phase1": {"<student>": {"<stage_type>[+<recipe>]": {"val_acc": ..., "train_s": ..., "questions": ...,
                                                           "command": "...", ...}}}}

`val_acc` is the accuracy of the best evaluation (the checkpoint the run keeps, selected on these same
validation questions, as the paper selects); `last_acc` is the final step's, free of that selection. The recipe of
record (r2-*) is keyed by the plain stage type, the others by `<stage_type>+<recipe>` (+ `--tag`).

    .venv/bin/python bench/phase1.py --only r2-bert2bert-answer --max-steps 125 --eval-limit 300
    .venv/bin/python bench/phase1.py --only r2-bert2bert-answer r2-bert2bert-full --parallel 2 --timeout 3600  # GPU

A run cut by --timeout keeps the evaluations it made (`timed_out: true`); the same command again resumes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "phase1.json"

# name -> (student, stage_type, extra train flags). Same budget for every experiment: the flags below only pick the
# recipe; steps, batch, validation questions and the evaluation points come from the command line. An answer-only
# run has one stage, so its --interval only sets the evaluation cadence: it gets the full method's cycle length.
RECIPE = ["--lr", "3e-4", "--warmup-steps", "10", "--answer-format", "letter_text", "--restrict-answer"]
# The second recipe: the option's words before the letter, the answer chosen by scoring every valid answer, a
# lower base learning rate with the new cross-attention at 10x, a longer warm-up.
RECIPE2 = ["--lr", "1e-4", "--warmup-steps", "50", "--cross-attention-lr-scale", "10", "--answer-format",
           "text_letter", "--restrict-answer", "score"]
PAPER = ["--lr", "5e-4", "--lr-scheduler", "cosine", "--warmup-ratio", "0.1"]
SMOL2 = ["--lr", "5e-5", "--warmup-steps", "50", "--answer-format", "text_letter", "--restrict-answer", "score"]
EXPERIMENTS: dict[str, tuple[str, str, list[str]]] = {
    "r2-bert2bert-answer": ("minilm-bert2bert", "summarize", RECIPE2),
    "r2-bert2bert-full": ("minilm-bert2bert", "recall_analyze_summarize", RECIPE2),
    "r2-bert2bert-recall": ("minilm-bert2bert", "recall_summarize", RECIPE2),
    "r2-bert2bert-analyze": ("minilm-bert2bert", "analyze_summarize", RECIPE2),
    "r2-smollm2-answer": ("smollm2-135m", "summarize", SMOL2),
    "r2-smollm2-full": ("smollm2-135m", "recall_analyze_summarize", SMOL2),
    # The same with 3x the learning rate.
    "r2lr3-bert2bert-answer": ("minilm-bert2bert", "summarize", ["--lr", "3e-4", *RECIPE2[2:]]),
    "r2lr3-bert2bert-full": ("minilm-bert2bert", "recall_analyze_summarize", ["--lr", "3e-4", *RECIPE2[2:]]),
    # The paper's released recipe as it is: its target format, free decoding, lr 5e-4, cosine decay after a 10%
    # warm-up (finetune.py). The GPU rows of bench/RESULTS.md ran before that schedule was the default (linear, no
    # warm-up): "paperlin" keeps that schedule, to tell whether the paper recipe's collapse was the schedule.
    "paper-bert2bert-answer": ("minilm-bert2bert", "summarize", PAPER),
    "paper-bert2bert-full": ("minilm-bert2bert", "recall_analyze_summarize", PAPER),
    "paperlin-bert2bert-answer": ("minilm-bert2bert", "summarize",
                                  ["--lr", "5e-4", "--lr-scheduler", "linear", "--warmup-ratio", "0"]),
    "bert2bert-answer": ("minilm-bert2bert", "summarize", RECIPE),
    "bert2bert-full": ("minilm-bert2bert", "recall_analyze_summarize", RECIPE),
    "bert2bert-recall": ("minilm-bert2bert", "recall_summarize", RECIPE),
    "bert2bert-analyze": ("minilm-bert2bert", "analyze_summarize", RECIPE),
    # The "warm-up of the new cross-attention" idea: those weights at 10x the learning rate.
    "bert2bert-answer-xattn": ("minilm-bert2bert", "summarize", [*RECIPE, "--cross-attention-lr-scale", "10"]),
    "bert2bert-full-xattn": ("minilm-bert2bert", "recall_analyze_summarize",
                             [*RECIPE, "--cross-attention-lr-scale", "10"]),
    # A pretrained LM, fully fine-tuned: the probe lr for it rather than the new-weights lr above.
    "smollm2-answer": ("smollm2-135m", "summarize", ["--lr", "5e-5", *RECIPE[2:]]),
    "smollm2-full": ("smollm2-135m", "recall_analyze_summarize", ["--lr", "5e-5", *RECIPE[2:]]),
}


def load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {"phase1": {}}


def save(results: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, OUT)


def interval_for(stage_type: str, interval: int) -> int:
    from tinythinker.schedule import cycle_steps
    from tinythinker.stages import stages_of

    # Evaluate every stage type at the same steps: one full-method cycle (CSQA has 5 options).
    full = cycle_steps(stages_of("recall_analyze_summarize"), interval, 5)
    return interval * full // cycle_steps(stages_of(stage_type), interval, 5)


def run_one(name: str, args: argparse.Namespace) -> dict:
    student, stage_type, extra = EXPERIMENTS[name]
    run = args.run_for.get(name) or str(Path(args.runs_root) / name)
    cmd = [sys.executable, "-m", "tinythinker", "train", "--data", "csqa", "--data-dir", args.data_dir,
           "--student", student, "--stage-type", stage_type, "--run", run, "--limit", str(args.limit),
           "--eval-limit", str(args.eval_limit), "--max-steps", str(args.max_steps), "--interval",
           str(interval_for(stage_type, args.interval)), "--batch-size", str(args.batch_size), "--epochs", "100", "--seed", "0",
           "--eval-batch-size", str(args.eval_batch_size), *extra]
    shown = " ".join(shlex.quote(c) for c in [".venv/bin/python", *cmd[1:]])
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {shown}", flush=True)
    start = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    timed_out = False
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=args.timeout)
        stdout, stderr, rc = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:  # keep what it evaluated so far; the record says it was cut short
        timed_out = True
        stdout, stderr, rc = _text(e.stdout), _text(e.stderr), None
    wall = time.time() - start
    Path(run).mkdir(parents=True, exist_ok=True)
    (Path(run) / "bench_stdout.txt").write_text(stdout[-20000:] + "\n--- stderr ---\n" + stderr[-20000:])
    if rc not in (0, None):
        raise RuntimeError(f"{name} failed ({rc}): {stderr[-2000:]}")
    result = {}
    if not timed_out:
        result = json.loads(stdout[stdout.rindex("\n{") + 1:] if "\n{" in stdout else stdout)
    from tinythinker import runs

    evals = runs.read_metrics(run, "eval")
    last = evals[-1] if evals else {}
    best = max(evals, key=lambda e: e["accuracy"]) if evals else {}
    losses = runs.read_metrics(run, "train")
    return {
        "val_acc": result.get("best_accuracy", best.get("accuracy")),
        "best_step": result.get("best_step", best.get("step")), "last_acc": last.get("accuracy"),
        "last_top_answer_share": last.get("top_answer_share"), "last_distinct_answers": last.get("distinct_answers"),
        "evals": [{k: e.get(k) for k in ("step", "accuracy", "invalid_rate", "top_answer_share", "eval_s")}
                  for e in evals],
        "last_loss_by_stage": {e.get("stage"): e.get("loss") for e in losses},
        "questions": last.get("questions"), "train_questions": args.limit,
        "steps": result.get("global_step", last.get("step")), "batch_size": args.batch_size,
        "train_s": result.get("train_s"), "wall_s": round(wall, 1), "timed_out": timed_out,
        "peak_rss_mb": result.get("peak_rss_mb"), "stage_sizes": result.get("stage_sizes"), "run": run,
        "command": shown, "recipe": extra, "device": _device_name(),
    }


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def _device_name() -> str:
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def label_of(name: str) -> str:
    """Results key: the recipe of record (r2-*) under the plain stage type, the other recipes marked."""
    _, stage_type, extra = EXPERIMENTS[name]
    recipe = name.split("-")[0]
    if recipe == "r2":
        return stage_type
    if recipe in ("bert2bert", "smollm2"):  # the first recipe's experiments carry no prefix
        return stage_type + "+r1" + ("+xattn10" if "--cross-attention-lr-scale" in extra else "")
    return f"{stage_type}+{recipe}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--runs-root", default="runs/bench")
    p.add_argument("--full-run", default="runs/bench-csqa-p1",
                   help="run folder for the default student's full-method run (phase 2 starts from its best/)")
    p.add_argument("--default-student", default="minilm-bert2bert")
    p.add_argument("--limit", type=int, default=2000)
    p.add_argument("--eval-limit", type=int, default=100)
    p.add_argument("--max-steps", type=int, default=56)
    p.add_argument("--interval", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-batch-size", type=int, default=50)
    p.add_argument("--tag", default="", help="suffix of the results key, e.g. '+cpu280' for a smaller budget")
    p.add_argument("--parallel", type=int, default=1, help="experiments run at once (a GPU machine has room)")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each experiment")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per experiment; one cut short keeps the evaluations it made (timed_out: true)")
    args = p.parse_args()
    full = {"minilm-bert2bert": "bert2bert-full", "smollm2-135m": "smollm2-full"}[args.default_student]
    args.run_for = {full: args.full_run}
    lock = threading.Lock()

    def one(name: str) -> None:
        student = EXPERIMENTS[name][0]
        record = run_one(name, args)
        with lock:
            results = load()
            results["phase1"].setdefault(student, {})[label_of(name) + args.tag] = record
            save(results)
        print(json.dumps({name: {k: record[k] for k in ("val_acc", "last_acc", "last_top_answer_share", "train_s",
                                                        "wall_s", "timed_out", "questions")}}), flush=True)

    # Several at once only where there is hardware for it (a GPU machine): on 2 CPU cores run them one by one.
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        for future in [pool.submit(one, name) for name in args.only]:
            future.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
