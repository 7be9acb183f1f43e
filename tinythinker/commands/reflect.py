"""`python -m tinythinker reflect`: phase 2, iterative DPO on the student's own rationales."""

from __future__ import annotations

import argparse
import json
import sys
import time

from tinythinker.commands.presets import PAPER, add_preset, resolve
from tinythinker.phase2 import DPO_STAGE_TYPES, PAIR_MODES, ReflectConfig, reflect

# `--preset paper`: the paper's phase-2 recipe (shengminp/TinyThinker, scripts/run_dpo.sh, dpo.py, utils/config.py),
# whatever the CPU-friendly defaults are; flags given on the command line still win. The sampling settings that are
# not flags are fixed in phase2.sample_recalls / sample_analyses: recall sampled with top_k 0 (off), the later
# stages greedy.
PRESETS: dict[str, dict] = {
    PAPER: {
        "iterations": 5,  # run_dpo.sh DPO_ITERS=(1 2 3 4 5)
        "samples": 10,  # GENERATION_TIMES=10
        "temperature": 0.7,  # utils/config.py recall_temperature (top_k 0)
        "beta": 0.5,  # dpo.py --beta
        "alpha": 0.5,  # dpo.py --rpo_alpha
        "lr": 5e-6,  # LEARNING_RATE=0.000005
        "batch_size": 32,  # TRAINING_PER_GPU_BATCH_SIZE=32
        "cycles": 10,  # dpo.py max_steps = 10 schedule cycles
        "lora_r": 0,  # full fine-tuning
    },
}


def register(subparsers) -> None:
    d = ReflectConfig(from_run="")
    p = subparsers.add_parser(
        "reflect", help="phase 2: self-reflection with iterative DPO on the student's own rationales",
        description="Phase 2 of TinyThinker. Each iteration the student samples its own recalls on training "
                    "questions (and analyses on the recalls that led to the right answer), builds preference "
                    "pairs (right over wrong), trains DPO + NLL against the iteration's starting model, keeps the "
                    "checkpoint with the best staged-pipeline accuracy on validation, and starts the next "
                    "iteration from it. Every sampled trace and pair goes to the store with its iteration. "
                    "Rerunning the same command resumes after the last finished iteration.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--from", dest="from_run", required=True, help="phase-1 run folder (its best/ starts phase 2)")
    p.add_argument("--run", required=True, help="run folder for phase 2 (config, metrics.jsonl, iter_<k>/, best/)")
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--samples", type=int, default=d.samples, help="recalls sampled per training question")
    p.add_argument("--stage-type", default=d.stage_type, choices=list(DPO_STAGE_TYPES),
                   help="which stages get DPO pairs")
    p.add_argument("--pairs", default=d.pairs, choices=PAIR_MODES,
                   help="auto: built from sampled traces; curated: labelled pairs from the store; both")
    p.add_argument("--refuse-failing-pairs", action="store_true",
                   help="with --pairs curated or both: refuse to start when the curated pairs fail a pair check "
                        "(consistent outcome, duplicates, contradictions, identical sides, length and answer-letter "
                        "balance; thresholds in tinythinker.pair_checks); without it the check table is only shown")
    p.add_argument("--limit", type=int, default=None, help="sample on the first N training questions")
    p.add_argument("--eval-limit", type=int, default=None, help="validate on the first N validation questions")
    p.add_argument("--beta", type=float, default=d.beta, help="DPO beta")
    p.add_argument("--alpha", type=float, default=d.alpha, help="weight of the chosen NLL term (RPO)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--no-teacher-fill", dest="teacher_fill", action="store_false",
                   help="recall pairs from the student's own samples only; by default (the paper) teacher recalls "
                        "take the chosen side where the wrong samples outnumber the right ones")
    p.add_argument("--micro-batches", type=int, default=d.micro_batches,
                   help="split each optimizer step of --batch-size pairs into this many micro-batches (memory; the "
                        "same steps). Default: on CPU micro-batches of at most 4 pairs, on a GPU one piece. Unlike "
                        "train's --grad-accum, the step stays --batch-size pairs")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in the backward pass: less memory, about a third slower")
    p.add_argument("--cycles", type=int, default=d.cycles,
                   help="schedule cycles per iteration (recall then analyze pairs), evaluated after each")
    p.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature")
    p.add_argument("--sample-batch-size", type=int, default=d.sample_batch_size)
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--lora-r", type=int, default=d.lora_r,
                   help="LoRA rank for a student that has none yet (0: full fine-tuning, the paper); a phase-1 run "
                        "trained with LoRA keeps its own adapter")
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha, help="LoRA alpha (None: 2 x rank)")
    p.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    p.add_argument("--lora-targets", default=d.lora_targets,
                   help="comma-separated module names LoRA wraps (None: per student kind)")
    p.add_argument("--db", default=None, help="store database (default: env TINYTHINKER_DB or annotations/tinythinker.db)")
    add_preset(p, PRESETS, "paper: the paper's phase-2 recipe (5 iterations, 10 samples, recall at temperature 0.7 "
                           "with top-k off and greedy elsewhere, beta 0.5, rpo_alpha 0.5, lr 5e-6, batch 32, 10 "
                           "cycles); flags given explicitly still win")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ReflectConfig:
    resolve(args, PRESETS)
    return ReflectConfig(
        from_run=args.from_run, run=args.run, iterations=args.iterations, samples=args.samples,
        stage_type=args.stage_type, pairs=args.pairs, limit=args.limit, eval_limit=args.eval_limit,
        beta=args.beta, alpha=args.alpha, lr=args.lr, batch_size=args.batch_size, cycles=args.cycles,
        temperature=args.temperature, sample_batch_size=args.sample_batch_size,
        eval_batch_size=args.eval_batch_size, seed=args.seed, db=args.db, lora_r=args.lora_r,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, lora_targets=args.lora_targets,
        refuse_failing_pairs=args.refuse_failing_pairs, micro_batches=args.micro_batches,
        gradient_checkpointing=args.gradient_checkpointing, teacher_fill=args.teacher_fill,
    )


class ProgressPrinter:
    """One line per phase and per finished iteration; step counters overwrite one line."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.time()

    def __call__(self, event: dict) -> None:
        t = f"[{time.time() - self.t0:7.0f}s]"
        kind = event.get("kind")
        if kind == "phase":
            extra = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("kind", "phase"))
            print(f"\n{t} {event['phase']}: {extra}", file=self.stream, flush=True)
        elif kind == "pair_checks":
            verdict = "pass every check" if event["ok"] else f"fail: {', '.join(event['failed'])}"
            print(f"\n{t} pair checks on {event['pairs']} curated pairs ({verdict}):\n{event['text']}",
                  file=self.stream, flush=True)
        elif kind == "step":
            print(f"\r{t} step {event['step']}/{event.get('max_steps', '?')}", end="", file=self.stream, flush=True)
        elif kind == "iteration":
            print(f"\n{t} iteration {event['iteration']} done: pairs {event['pairs']}, val acc {event['val_acc']:.3f}, "
                  f"dpo loss {event['dpo_loss']:.4f}, reward margin {event['reward_margin']:.4f}, "
                  f"reward acc {event['reward_accuracy']:.3f}", file=self.stream, flush=True)
        elif "done" in event and "total" in event:
            print(f"\r{t} {event.get('phase', '')} {event['done']}/{event['total']}", end="", file=self.stream,
                  flush=True)


def run(args: argparse.Namespace) -> int:
    result = reflect(config_from_args(args), on_progress=ProgressPrinter())
    print(file=sys.stderr)
    print(json.dumps(result.to_dict(), indent=2))
    return 0
