"""Phase 1 benchmark: does the student learn, and do three stages beat answer-only on the same budget?

Each experiment is one `python -m tinythinker train ...` child process (so its wall time and peak memory are its
own, and its exact command is recorded); results are merged into bench/out/phase1.json as they finish:

    {"phase1": {"<student>": {"<stage_type>[+<recipe>]": {"val_acc": ..., "train_s": ..., "questions": ...,
                                                           "command": "...", ...}}}}

`val_acc` is the accuracy of the best evaluation (the checkpoint the run keeps, selected on these same
validation questions, as the paper selects); `last_acc` is the final step's, free of that selection.

    .venv/bin/python bench/phase1.py --only bert2bert-answer --max-steps 125 --eval-limit 300
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "phase1.json"

# name -> (student, stage_type, extra train flags). Same budget for every experiment: the flags below only pick the
# recipe; steps, batch, validation questions and the evaluation points come from the command line. An answer-only
# run has one stage, so its --interval only sets the evaluation cadence: it gets the full method's cycle length.
RECIPE = ["--lr", "3e-4", "--warmup-steps", "10", "--answer-format", "letter_text", "--restrict-answer"]
EXPERIMENTS: dict[str, tuple[str, str, list[str]]] = {
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
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    Path(run).mkdir(parents=True, exist_ok=True)
    (Path(run) / "bench_stdout.txt").write_text(done.stdout[-20000:] + "\n--- stderr ---\n" + done.stderr[-20000:])
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout[done.stdout.rindex("\n{") + 1:] if "\n{" in done.stdout else done.stdout)
    from tinythinker import runs

    evals = runs.read_metrics(run, "eval")
    last = evals[-1] if evals else {}
    return {
        "val_acc": result["best_accuracy"], "best_step": result["best_step"], "last_acc": last.get("accuracy"),
        "last_top_answer_share": last.get("top_answer_share"), "last_distinct_answers": last.get("distinct_answers"),
        "evals": [{k: e.get(k) for k in ("step", "accuracy", "invalid_rate", "top_answer_share")} for e in evals],
        "questions": last.get("questions"), "train_questions": args.limit, "steps": result["global_step"],
        "batch_size": args.batch_size, "train_s": result["train_s"], "wall_s": round(wall, 1),
        "peak_rss_mb": result["peak_rss_mb"], "stage_sizes": result["stage_sizes"], "run": run,
        "command": shown, "recipe": extra,
    }


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
    args = p.parse_args()
    full = {"minilm-bert2bert": "bert2bert-full", "smollm2-135m": "smollm2-full"}[args.default_student]
    args.run_for = {full: args.full_run}
    for name in args.only:
        student, stage_type, extra = EXPERIMENTS[name]
        label = stage_type + ("+xattn10" if "--cross-attention-lr-scale" in extra else "")
        record = run_one(name, args)
        results = load()
        results["phase1"].setdefault(student, {})[label] = record
        save(results)
        print(json.dumps({name: {k: record[k] for k in ("val_acc", "last_acc", "last_top_answer_share", "train_s",
                                                        "peak_rss_mb", "questions")}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
