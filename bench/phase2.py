"""Phase 2 benchmark: does self-reflection (iterative DPO on the student's own rationales) improve on phase 1?

One `python -m tinythinker reflect ...` child process from the phase-1 benchmark's best checkpoint (so its wall
time is its own and its exact command is recorded), then the run folder's metrics are summarised into
bench/out/phase2.json:

    {"phase2": {"command": "...", "from": "...", "phase1": {...}, "baseline_val_acc": ...,
                "iterations": [{"iteration": 1, "val_acc": ..., "pairs": {...}, "dpo_loss": ..., ...}],
                "best_val_acc": ..., "improves_on_phase1": ..., "wall_s": ...}}

`baseline_val_acc` is the phase-1 checkpoint scored by phase 2 itself on the same validation questions as every
iteration (iteration 0); `phase1` repeats what the phase-1 run recorded about itself.

    .venv/bin/python bench/phase2.py --from runs/bench-csqa-p1 --snapshot runs/bench-csqa-p1-snap \\
        --run runs/bench-csqa-p2 --limit 16 --samples 4 --eval-limit 100 --cycles 1 --batch-size 16 --lr 2e-5

The defaults are sized for about 30 minutes on 2 shared CPU cores; the paper's scale (full train set, 10
samples, 10 cycles, lr 5e-6) is `--limit 9741 --samples 10 --cycles 10 --batch-size 32 --lr 5e-6`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "phase2.json"
sys.path.insert(0, str(ROOT))

from tinythinker import runs  # noqa: E402


def save(results: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, OUT)


def phase1_summary(path: Path) -> dict:
    config = runs.read_config(path)
    evals = [r for r in runs.read_metrics(path, "eval") if r.get("accuracy") is not None]
    return {
        "run": str(path), "student": config.get("student"), "stage_type": config.get("stage_type"),
        "train_questions": config.get("limit"), "eval_limit": config.get("eval_limit"),
        "best_val_acc": max((r["accuracy"] for r in evals), default=None),
        "best_step": max(evals, key=lambda r: r["accuracy"])["step"] if evals else None,
        "eval_questions": evals[-1].get("questions") if evals else None,
        "last_val_acc": evals[-1]["accuracy"] if evals else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="from_run", default="runs/bench-csqa-p1")
    ap.add_argument("--run", default="runs/bench-csqa-p2")
    ap.add_argument("--db", default=None, help="store for the bench (default: RUN.db next to the run folder)")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--eval-limit", type=int, default=100)
    ap.add_argument("--cycles", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--stage-type", default="recall_analyze")
    ap.add_argument("--eval-batch-size", type=int, default=50)
    ap.add_argument("--sample-batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--snapshot", default=None,
                    help="copy FROM's config, metrics and best/ here first and start from the copy: phase 1 may "
                         "still be training and replace its best/ while phase 2 reads it")
    args = ap.parse_args()

    if args.snapshot:
        snap = Path(args.snapshot)
        if not snap.exists():
            tmp = snap.with_name(snap.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            src = Path(args.from_run)
            for name in (runs.CONFIG, runs.METRICS):
                shutil.copy2(src / name, tmp / name)
            shutil.copytree(src / runs.BEST, tmp / runs.BEST)
            tmp.rename(snap)
        args.snapshot_of = args.from_run
        args.from_run = str(snap)

    run = Path(args.run)
    db = args.db or str(run.with_suffix(".db"))
    cmd = [sys.executable, "-m", "tinythinker", "reflect", "--from", args.from_run, "--run", args.run,
           "--iterations", str(args.iterations), "--samples", str(args.samples), "--limit", str(args.limit),
           "--eval-limit", str(args.eval_limit), "--cycles", str(args.cycles), "--batch-size", str(args.batch_size),
           "--lr", str(args.lr), "--stage-type", args.stage_type, "--seed", str(args.seed), "--db", db,
           "--eval-batch-size", str(args.eval_batch_size), "--sample-batch-size", str(args.sample_batch_size)]
    shown = " ".join(shlex.quote(c if i else ".venv/bin/python") for i, c in enumerate(cmd))
    print(shown, flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT)
    wall = round(time.time() - t0, 1)
    if proc.returncode != 0:
        print(f"reflect exited with {proc.returncode}", file=sys.stderr)
        return proc.returncode

    its = runs.read_metrics(run, "iteration")
    baseline = runs.read_metrics(run, "baseline")
    base_acc = baseline[0]["accuracy"] if baseline else None
    keep = ("iteration", "val_acc", "val_invalid_rate", "pairs", "pairs_total", "traces", "dpo_loss",
            "reward_margin", "reward_accuracy", "final_dpo_loss", "final_reward_margin", "final_reward_accuracy",
            "steps", "train_s", "wall_s", "evals")
    best = max((r["val_acc"] for r in its), default=None)
    results = {"phase2": {
        "command": shown, "from": args.from_run, "snapshot_of": getattr(args, "snapshot_of", None), "run": args.run,
        "phase1": phase1_summary(Path(args.from_run)),
        "settings": {k: getattr(args, k) for k in ("iterations", "samples", "limit", "eval_limit", "cycles",
                                                    "batch_size", "lr", "stage_type", "seed")},
        "baseline_val_acc": base_acc, "baseline_invalid_rate": baseline[0]["invalid_rate"] if baseline else None,
        "iterations": [{k: r.get(k) for k in keep} for r in its],
        "best_val_acc": best,
        "improves_on_phase1": None if best is None or base_acc is None else best > base_acc,
        "final_val_acc": its[-1]["val_acc"] if its else None,
        "wall_s": wall,
        "cpu_threads": os.cpu_count(),
    }}
    save(results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
