"""`python -m tinythinker train`: phase 1, coarse-to-fine three-stage training into a run folder."""

from __future__ import annotations

import argparse
import json

from transformers.trainer_utils import SchedulerType

from tinythinker.commands.presets import PAPER, add_preset, resolve
from tinythinker.phase1 import ANSWER_FORMATS, Phase1Config, train_phase1
from tinythinker.schedule import ORDERS
from tinythinker.stages import DEFAULT_STAGE_TYPE, STAGE_TYPES

# `--preset paper`: the paper's phase-1 recipe (shengminp/TinyThinker, scripts/run_finetune.sh, finetune.py and
# utils/config.py), whatever the CPU-friendly defaults are; flags given on the command line still win.
PRESETS: dict[str, dict] = {
    PAPER: {
        "lr": 5e-4,  # run_finetune.sh --learning_rate 0.0005
        "batch_size": 64,  # --per_gpu_batch_size 64
        "epochs": 10.0,  # --num_train_epochs 10
        "max_steps": None,  # epochs decide
        "interval": 100,  # --interval 100
        "lr_scheduler": "cosine",  # finetune.py
        "warmup_ratio": 0.1,
        "warmup_steps": 0,  # a warm-up in steps would win over the ratio
        # utils/config.py max_length = 200: the generation budget of every stage at evaluation (its targets are
        # tokenised without a limit, so --max-target-length is not part of the recipe).
        "eval_max_new_tokens": 200,
        "answer_format": "letter",  # `So the answer is option X.`
        "restrict_answer": False,  # free decoding, read by the answer regex
        "order": "interval",
        "lora_r": 0,  # full fine-tuning
        "cross_attention_lr_scale": 1.0,
        "no_length_grouping": True,  # the Trainer's uniformly shuffled batches
    },
}


def register(subparsers) -> None:
    d = Phase1Config()
    p = subparsers.add_parser(
        "train", help="phase 1: train a student on Recall / Analyze / Summarize with the interval schedule",
        description="Phase 1 of TinyThinker. Builds the three stage datasets from teacher rationales, trains with "
                    "the interval schedule, evaluates the staged pipeline at the end of every schedule cycle and "
                    "keeps the best checkpoint in RUN/best. Rerunning the same command resumes from RUN's last "
                    "checkpoint. Multi-GPU: the same command under `torchrun --nproc_per_node N -m tinythinker -- "
                    "train ...` (the `--` stops torchrun reading --run as its own --run-path) or "
                    "`accelerate launch --num_processes N -m tinythinker train ...`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", default=d.data,
                   help="benchmark: csqa, obqa, strategyqa; or jsonl / paper with --path (your own data)")
    p.add_argument("--path", default=None, help="with --data jsonl / paper: your file or folder")
    p.add_argument("--data-dir", default=None, help="local data folder (else env TINYTHINKER_DATA_DIR)")
    p.add_argument("--source", default=None, help="rationale source (default: the benchmark's own)")
    p.add_argument("--student", default=d.student,
                   help="minilm-bert2bert, smollm2-135m, a hub id, a student folder, or a run folder (its best/)")
    p.add_argument("--stage-type", default=DEFAULT_STAGE_TYPE, choices=list(STAGE_TYPES))
    p.add_argument("--run", required=True, help="run folder (config, metrics.jsonl, checkpoints, best/)")
    p.add_argument("--interval", type=int, default=d.interval, help="steps per Recall/Summarize visit "
                   "(Analyze gets interval x number of options)")
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--limit", type=int, default=None, help="use the first N training questions")
    p.add_argument("--eval-limit", type=int, default=None, help="validate on the first N validation questions")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--grad-accum", type=int, default=d.grad_accum)
    p.add_argument("--micro-batches", type=int, default=d.micro_batches,
                   help="run each batch of --batch-size examples as this many forward passes (memory; the same "
                        "optimizer steps). Default: on CPU pieces of at most 4 examples, on a GPU one piece")
    p.add_argument("--lr", type=float, default=d.lr,
                   help="the paper's 5e-4 is for T5 / bert2bert (use 1e-4 with the r2 recipe); fine-tune a pretrained "
                        "causal LM such as smollm2-135m at about 5e-5")
    p.add_argument("--lr-scheduler", default=d.lr_scheduler, choices=[t.value for t in SchedulerType],
                   help="learning-rate schedule (the Trainer's names); the paper's finetune.py uses cosine")
    p.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio,
                   help="warm-up as a fraction of the optimizer steps (the paper: 0.1)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="warm-up in optimizer steps; when > 0 it wins over --warmup-ratio")
    p.add_argument("--lora-r", type=int, default=d.lora_r,
                   help="LoRA rank through peft (0: full fine-tuning, the paper)")
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha, help="LoRA alpha (None: 2 x rank)")
    p.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    p.add_argument("--lora-targets", default=d.lora_targets,
                   help="comma-separated module names LoRA wraps (None: per student kind)")
    p.add_argument("--cross-attention-lr-scale", type=float, default=d.cross_attention_lr_scale,
                   help="bert2bert: learning rate multiplier for the new (randomly initialised) cross-attention")
    p.add_argument("--seed", type=int, default=d.seed, help="initialisation, shuffling and sampling")
    p.add_argument("--split-seed", type=int, default=d.split_seed,
                   help="seed of the train/validation split (CSQA, StrategyQA); keep it when continuing a run, so "
                        "that no validation question becomes a training one")
    p.add_argument("--answer-format", default=d.answer_format, choices=ANSWER_FORMATS,
                   help="letter: the paper's 'So the answer is option X.'; letter_text: '(X) TEXT. So the ...'; "
                        "text_letter: 'TEXT. So the answer is option X.'")
    p.add_argument("--order", default=d.order, choices=ORDERS,
                   help="interval: the paper's schedule (Analyze gets n_options x interval steps per visit); equal: "
                        "every stage interval steps per visit, so Summarize gets a third of the steps; mixed: all "
                        "stages shuffled together (ablation)")
    p.add_argument("--restrict-answer", nargs="?", const="constrain", default=False, choices=("constrain", "score"),
                   help="at evaluation, Summarize writes one of the question's valid answers: 'constrain' (the "
                        "default when given bare) decodes in a prefix tree of them, 'score' picks the one with the "
                        "best mean log-likelihood")
    p.add_argument("--eval-max-new-tokens", type=int, default=None,
                   help="cap each stage's generation at evaluation; None: the pipeline's per-stage budgets")
    p.add_argument("--max-source-length", type=int, default=d.max_source_length)
    p.add_argument("--max-target-length", type=int, default=d.max_target_length)
    p.add_argument("--eval-steps", type=int, default=d.eval_steps,
                   help="evaluate (and save) every N optimizer steps (default: once per schedule cycle, the paper's "
                        "cadence); on CPU, pair it with --eval-limit")
    p.add_argument("--full-width-loss", action="store_true",
                   help="compute the training loss from the model's full-width logits instead of at target "
                        "positions only (the same loss, slower; for checking)")
    p.add_argument("--no-length-grouping", action="store_true",
                   help="uniformly shuffled batches as in the paper (default: batches of similar length inside "
                        "each stage segment of the schedule, less padding, same stage order)")
    p.add_argument("--own-context", default=None, metavar="TRACES",
                   help="traces of the student's own pipeline on training questions (evaluate --split train --out); "
                        "each adds a Summarize example with its own recall/analyses and the gold answer")
    p.add_argument("--train-stages", default=None, metavar="STAGES",
                   help="train only these stages of the stage type, comma-separated (e.g. summarize); inputs keep "
                        "the stage type's format")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in the backward pass: far less memory, about a third more time")
    p.add_argument("--logging-steps", type=int, default=None, help="default: every --interval steps")
    add_preset(p, PRESETS, "paper: the paper's phase-1 recipe (lr 5e-4, batch 64, 10 epochs, interval 100, cosine "
                           "with 10%% warm-up, max length 200, the letter target, free decoding); flags given "
                           "explicitly still win")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Phase1Config:
    resolve(args, PRESETS)
    return Phase1Config(
        data=args.data, data_dir=args.data_dir, path=args.path, source=args.source, student=args.student,
        stage_type=args.stage_type, run=args.run, interval=args.interval, epochs=args.epochs,
        max_steps=args.max_steps, limit=args.limit, eval_limit=args.eval_limit, batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size, grad_accum=args.grad_accum, micro_batches=args.micro_batches,
        lr=args.lr, lr_scheduler=args.lr_scheduler, warmup_ratio=args.warmup_ratio, warmup_steps=args.warmup_steps,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, lora_targets=args.lora_targets,
        target_only_loss=not args.full_width_loss, eval_steps=args.eval_steps,
        gradient_checkpointing=args.gradient_checkpointing, group_by_length=not args.no_length_grouping,
        cross_attention_lr_scale=args.cross_attention_lr_scale, seed=args.seed, split_seed=args.split_seed,
        answer_format=args.answer_format, order=args.order,
        restrict_answer=args.restrict_answer, eval_max_new_tokens=args.eval_max_new_tokens,
        max_source_length=args.max_source_length,
        max_target_length=args.max_target_length, logging_steps=args.logging_steps,
        own_context=args.own_context, train_stages=args.train_stages,
    )


def run(args: argparse.Namespace) -> int:
    result = train_phase1(config_from_args(args))  # the Trainer draws the progress bar
    print(json.dumps({k: v for k, v in result.to_dict().items() if k != "evals"}, indent=2))
    return 0
