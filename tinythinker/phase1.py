"""Phase 1: coarse-to-fine supervised training (reasoning acquisition).

One student is fine-tuned on three stage datasets (Recall, Analyze per option, Summarize) built from teacher
rationales, switching between them on the paper's interval schedule (`tinythinker.schedule`), and the checkpoint
is chosen by the accuracy of the full staged pipeline on validation questions.

The loop is a stock `transformers.Trainer`; `Phase1Trainer` overrides only the train dataloader (the schedule is
a batch sampler) and `evaluate` (staged generation instead of teacher-forced loss). Runs under `torchrun` /
`accelerate launch` unchanged.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments

from tinythinker import DEFAULT_STUDENT, runs, stages
from tinythinker.pairs import micro_batch_count
from tinythinker.schedule import ORDERS, StageBatchSampler, cycle_steps
from tinythinker.types import Question, Rationale, Trace

log = logging.getLogger("tinythinker.phase1")

ANSWER_FORMATS = stages.ANSWER_FORMATS


@dataclass
class Phase1Config:
    data: str = "csqa"
    student: str = DEFAULT_STUDENT
    stage_type: str = stages.DEFAULT_STAGE_TYPE
    run: str = "runs/phase1"
    data_dir: str | None = None
    path: str | None = None  # with data "jsonl" / "paper": the user's file or folder
    source: str | None = None  # rationale source; None = the benchmark's default
    limit: int | None = None  # training questions
    eval_limit: int | None = None  # validation questions (the first N)
    seed: int = 0  # initialisation, shuffling and sampling
    # The seed of the train/validation split (CSQA and StrategyQA draw validation from train). Kept apart from
    # `seed`: a run continued with another --seed must not train on the validation questions of the first.
    split_seed: int = 0
    interval: int = 20
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 16
    eval_batch_size: int = 32
    lr: float = 5e-4  # the paper's released scripts (T5-small)
    # The paper's finetune.py: cosine decay after a warm-up of 10% of the steps.
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    warmup_steps: int = 0  # when > 0, wins over warmup_ratio (the Trainer's rule)
    # LoRA through peft (0 = full fine-tuning). Alpha, dropout and target modules default per student kind
    # (`students.lora_defaults`).
    lora_r: int = 0
    lora_alpha: int | None = None
    lora_dropout: float = 0.05
    lora_targets: str | None = None  # comma-separated module names; None = the student kind's default
    # The training loss from hidden states at target positions only (the LM head never runs over prompt
    # tokens); same loss, less time and memory. False = the model's own full-width loss.
    target_only_loss: bool = True
    # Batches of similar length inside each stage segment of the schedule (`StageBatchSampler` lengths): less
    # padding, same stage order. False = the paper's uniformly shuffled batches.
    group_by_length: bool = True
    # Recompute activations in the backward pass: peak memory of a 256-token SmolLM2 batch of 16 drops from
    # ~9 GB to ~2 GB, for about a third more compute per step.
    gradient_checkpointing: bool = False
    # Evaluate (and save) every N optimizer steps; None = once per schedule cycle, as the paper's cadence.
    eval_steps: int | None = None
    weight_decay: float = 0.0
    # A bert2bert warm start has randomly initialised cross-attention while everything else is pretrained; a
    # larger learning rate for those weights is a recipe knob against a decoder that learns to ignore its input.
    cross_attention_lr_scale: float = 1.0
    grad_accum: int = 1
    # Memory, not the experiment (as reflect's): each batch of `batch_size` examples runs as `micro_batches` equal
    # forward passes, accumulated into the same optimizer step. On CPU activations set the peak (SmolLM2, 16
    # Summarize rows of 200 tokens: 10.8 GB in one piece, 3.7 GB in pieces of 4) and a piece costs per example
    # what the whole batch does. None: on CPU pieces of at most pairs.CPU_MICRO_BATCH examples, on a GPU one piece.
    micro_batches: int | None = None
    # `stages.ANSWER_FORMATS`: "letter" (the paper's `So the answer is option X.`), "letter_text"
    # (`(X) TEXT. So the answer is option X.`), "text_letter" (`TEXT. So the answer is option X.`)
    answer_format: str = "letter"
    order: str = "interval"  # "equal": every stage `interval` steps per visit; "mixed": all shuffled (ablation)
    # Summarize at evaluation: False = free (the paper), True/"constrain" = prefix tree of the valid answers,
    # "score" = the valid answer with the best mean log-likelihood (`stages.answer_mode`)
    restrict_answer: bool | str = False
    eval_max_new_tokens: int | None = None  # cap every stage's generation at evaluation (None: pipeline's budgets)
    max_source_length: int = 512
    max_target_length: int = 256  # targets are never cut: a longer one is an error naming it
    logging_steps: int | None = None  # None: one log per `interval` steps, i.e. per stage segment
    # The context-shift remedy (issue 11): Summarize is trained on the teacher's recall and analyses but reads the
    # student's own at test time. A traces JSONL of the student's own pipeline on *training* questions
    # (`evaluate --split train --out FILE`) adds one Summarize example per trace: its own context, the gold answer.
    own_context: str | None = None
    # Train only these stages of the stage type (comma-separated, e.g. "summarize" to continue Summarize alone);
    # inputs keep the stage type's format. None: every stage the stage type has.
    train_stages: str | None = None

    def check(self) -> None:
        """Everything that can be checked before loading data or models."""
        stages.stages_of(self.stage_type)  # clear error for an unknown stage type
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"unknown answer format {self.answer_format!r}; choose one of {', '.join(ANSWER_FORMATS)}")
        stages.answer_mode(self.restrict_answer)
        if self.order not in ORDERS:
            raise ValueError(f"unknown order {self.order!r}; choose one of {', '.join(ORDERS)}")
        for name in ("interval", "batch_size", "eval_batch_size", "grad_accum", "max_source_length",
                     "max_target_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.micro_batches is not None and (self.micro_batches < 1 or self.batch_size % self.micro_batches):
            raise ValueError(f"micro_batches must be at least 1 and divide batch_size {self.batch_size}, got "
                             f"{self.micro_batches} (each batch runs as that many equal forward passes)")
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError("epochs must be positive (or give max_steps)")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.cross_attention_lr_scale <= 0:
            raise ValueError(f"cross_attention_lr_scale must be positive, got {self.cross_attention_lr_scale}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be 0 (full fine-tuning) or positive, got {self.lora_r}")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"eval_steps must be at least 1, got {self.eval_steps}")
        self.trained_stages()  # clear error for a stage the stage type does not have
        if self.own_context and stages.SUMMARIZE not in self.trained_stages():
            raise ValueError("own_context adds Summarize examples, but this run trains no Summarize "
                             f"(stage type {self.stage_type!r}, train_stages {self.train_stages!r})")
        if self.own_context and self.stage_type == stages.SUMMARIZE:
            raise ValueError("own_context needs a stage type with Recall or Analyze: stage type 'summarize' reads "
                             "the bare question, so a student's own context has nowhere to go")
        from transformers.trainer_utils import SchedulerType

        if self.lr_scheduler not in {t.value for t in SchedulerType}:
            raise ValueError(f"unknown lr_scheduler {self.lr_scheduler!r}; e.g. cosine, linear, constant")

    def trained_stages(self) -> list[str]:
        """The stages this run trains, in the stage type's order."""
        own = stages.stages_of(self.stage_type)
        if not self.train_stages:
            return list(own)
        wanted = [s.strip() for s in self.train_stages.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in own]
        if unknown or not wanted:
            raise ValueError(f"train_stages {self.train_stages!r}: stage type {self.stage_type!r} has the stages "
                             f"{', '.join(own)}" + (f", not {', '.join(unknown)}" if unknown else ""))
        return [s for s in own if s in wanted]

    def resolved(self) -> dict[str, Any]:
        """What config.json holds: every field, plus what kind of run it is."""
        d = asdict(self)
        d["command"] = "train"
        if d["split_seed"] == d["seed"]:
            # Runs from before split_seed existed split with `seed`: leaving the key out when the two agree keeps
            # their config.json identical, so they still resume.
            del d["split_seed"]
        return d


@dataclass
class StageData:
    """The (input, target) pairs of each stage a stage type trains, and what was left out and why."""

    examples: dict[str, list[tuple[str, str]]]
    dropped_duplicates: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    n_options: int = 0

    def sizes(self) -> dict[str, int]:
        return {s: len(v) for s, v in self.examples.items()}


def _answer_target(q: Question, answer_format: str) -> str:
    return stages.summarize_target(q.answer, q.option_text(q.answer), answer_format)


def build_stage_data(examples: list[tuple[Question, list[Rationale]]], stage_type: str,
                     answer_format: str = "letter", source_name: str = "the rationale source",
                     own_context: list[Trace] | None = None) -> StageData:
    """Stage datasets from teacher rationales, formatted by `tinythinker.stages` only.

    Every rationale of a question is used; duplicates are dropped by (input, target) as the paper's code does
    (so `summarize`, whose input is the bare question, keeps one example per question). A rationale that lacks
    what a stage's input needs (no recall text, or no analysis for some option of a Summarize input) is skipped
    for that stage and counted: training on inputs the pipeline never produces would teach the wrong format.
    """
    used = stages.stages_of(stage_type)
    need_recall, need_analyze = stages.RECALL in used, stages.ANALYZE in used
    if need_recall and not any(r.recall for _, rs in examples for r in rs):
        raise ValueError(f"stage type {stage_type!r} trains Recall, but {source_name} has no recall texts; "
                         "use --stage-type summarize or analyze_summarize, or another rationale source")
    if need_analyze and not any(r.analyses for _, rs in examples for r in rs):
        raise ValueError(f"stage type {stage_type!r} trains Analyze, but {source_name} has no per-option analyses; "
                         "use --stage-type summarize or recall_summarize, or another rationale source")
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in used}
    seen: dict[str, set[tuple[str, str]]] = {s: set() for s in used}
    dropped = dict.fromkeys(used, 0)
    skipped = dict.fromkeys(used, 0)
    n_options = 0

    def add(stage: str, inp: str, target: str) -> None:
        key = (inp, target)
        if key in seen[stage]:
            dropped[stage] += 1
            return
        seen[stage].add(key)
        out[stage].append(key)

    for q, rationales in examples:
        if q.answer is None:
            raise ValueError(f"training question {q.id!r} has no answer key")
        n_options = max(n_options, len(q.options))
        target = _answer_target(q, answer_format)
        if not need_recall and not need_analyze:
            add(stages.SUMMARIZE, stages.summarize_input(q, stage_type=stage_type), target)
            continue
        for r in rationales:
            has_recall = bool(r.recall) or not need_recall
            if need_recall:
                if r.recall:
                    add(stages.RECALL, stages.recall_input(q), r.recall)
                else:
                    skipped[stages.RECALL] += 1
            if need_analyze:
                for label in q.labels:
                    text = r.analyses.get(label)
                    if text and has_recall:
                        add(stages.ANALYZE, stages.analyze_input(q, r.recall, label, stage_type), text)
                    else:
                        skipped[stages.ANALYZE] += 1
            complete = not need_analyze or all(r.analyses.get(lab) for lab in q.labels)
            if has_recall and complete:
                add(stages.SUMMARIZE, stages.summarize_input(q, r.recall, r.analyses, stage_type), target)
            else:
                skipped[stages.SUMMARIZE] += 1
    for t in own_context or ():
        # The student's own context, labelled with the gold answer; incomplete traces would teach a format the
        # pipeline never produces, as for teacher rationales.
        complete = (not need_recall or t.recall) and (not need_analyze or all(t.analyses.get(lab)
                                                                               for lab in t.question.labels))
        if t.question.answer is None or not complete:
            skipped[stages.SUMMARIZE] += 1
            continue
        add(stages.SUMMARIZE, stages.summarize_input(t.question, t.recall, t.analyses, stage_type),
            _answer_target(t.question, answer_format))
    empty = [s for s in used if not out[s]]
    if empty:
        raise ValueError(f"no usable training examples for stage(s) {', '.join(empty)} of stage type "
                         f"{stage_type!r} in {source_name}")
    return StageData(out, dropped, skipped, n_options)


def only_stages(data: StageData, keep: list[str]) -> StageData:
    """`data` with the stages a run does not train left out (`Phase1Config.train_stages`)."""
    if list(data.examples) == keep:
        return data
    return StageData({s: data.examples[s] for s in keep}, {s: data.dropped_duplicates.get(s, 0) for s in keep},
                     {s: data.skipped.get(s, 0) for s in keep}, data.n_options)


def check_unseen(student: str, validation: list[Question], what: str) -> None:
    """Refuse to continue a student on a run whose validation questions it (or a run before it) trained on:
    its accuracy there would measure memory. Students that are no run folder (named, shipped, hub) pass."""
    from tinythinker.runs import trained_questions

    seen = trained_questions(student)
    leaked = [q.id for q in validation if q.id in seen]
    if leaked:
        raise ValueError(f"{what}: {len(leaked)} of this run's {len(validation)} validation questions (e.g. "
                         f"{leaked[0]!r}) were training questions of {student} or a run it continued; a different "
                         "--split-seed draws another split. Use the split seed of the run you continue "
                         "(its config.json: split_seed, else seed)")


def load_own_context(path: str | Path, validation: list[Question]) -> list[Trace]:
    """The student's own traces on training questions (`Phase1Config.own_context`). A trace of a validation
    question is refused, naming its line: training on it would leak the questions the checkpoint is chosen on."""
    from tinythinker.data.records import need_file
    from tinythinker.pipeline import read_traces

    file = need_file(path, "own context: ")
    traces = read_traces(file)
    held_out = {q.id for q in validation}
    for n, t in enumerate(traces, 1):
        if t.question.id in held_out:
            raise ValueError(f"{file}, trace {n}: question {t.question.id!r} is a validation question; own context "
                             "must come from training questions (evaluate --split train)")
    if not traces:
        raise ValueError(f"{file} holds no traces")
    return traces


class StageDataset(torch.utils.data.Dataset):
    """Encoded features of all stages, concatenated in stage order (what `StageBatchSampler` indexes).

    Token ids are kept as one int32 array per example, not Python lists: the full method's ~67,000 CSQA examples
    take ~80 MB instead of ~2 GB of Python ints. The attention mask (all ones before padding) and the labels
    (-100 over a causal prompt) are rebuilt per item from the lengths.
    """

    def __init__(self, features: list[dict[str, list[int]]]):
        self._ids = [np.asarray(f["input_ids"], dtype=np.int32) for f in features]
        self._labels = [np.asarray(f["labels"], dtype=np.int32) for f in features]

    def __len__(self) -> int:
        return len(self._ids)

    def length(self, i: int) -> int:
        return len(self._ids[i])

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        ids = self._ids[i].tolist()
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": self._labels[i].tolist()}


def encode_stage_data(student, data: StageData, max_source_length: int, max_target_length: int) -> StageDataset:
    dataset = StageDataset([])
    for s in data.examples:
        pairs = data.examples[s]
        for i in range(0, len(pairs), 256):  # chunks: only 256 examples are ever Python lists at once
            chunk = pairs[i:i + 256]
            enc = student.encode([p[0] for p in chunk], [p[1] for p in chunk],
                                 max_source_length=max_source_length, max_target_length=max_target_length)
            dataset._ids += [np.asarray(x, dtype=np.int32) for x in enc["input_ids"]]
            dataset._labels += [np.asarray(x, dtype=np.int32) for x in enc["labels"]]
    return dataset


LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def greedy(max_new_tokens: int | None = None):
    from tinythinker.pipeline import GREEDY, Sampling, StageSampling

    if max_new_tokens is None:
        return GREEDY
    return Sampling(**{s: StageSampling(max_new_tokens=max_new_tokens) for s in stages.STAGES})


def evaluate_pipeline(student, questions: list[Question], stage_type: str, *, batch_size: int,
                      restrict_answer: bool | str, rank: int = 0, world_size: int = 1,
                      max_new_tokens: int | None = None) -> torch.Tensor:
    """Greedy staged pipeline on this process's share of the questions, as counts so that shares add up:
    [correct, invalid, n, predictions of A, B, ..., Z]."""
    from tinythinker.pipeline import run_pipeline

    mine = questions[rank::world_size]
    was_training = student.model.training
    student.model.eval()  # no dropout while generating
    try:
        traces = run_pipeline(student, mine, stage_type=stage_type, sampling=greedy(max_new_tokens),
                              batch_size=batch_size,
                              restrict_answer=restrict_answer) if mine else []
    finally:
        student.model.train(was_training)
    counts = torch.zeros(3 + len(LABELS), dtype=torch.float64)
    for t in traces:
        counts[0] += bool(t.correct)
        counts[1] += t.predicted is None
        counts[2] += 1
        if t.predicted is not None and t.predicted in LABELS:
            counts[3 + LABELS.index(t.predicted)] += 1
    return counts


class Phase1Trainer(Trainer):
    """A stock Trainer whose batches follow the stage schedule and whose evaluation is the staged pipeline."""

    def __init__(self, *args, student, sampler_args: dict[str, Any], questions: list[Question],
                 stage_type: str, restrict_answer: bool | str, max_new_tokens: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_new_tokens = max_new_tokens
        self.student = student
        self.sampler_args = sampler_args
        self.questions = questions
        self.stage_type = stage_type
        self.restrict_answer = restrict_answer

    target_only_loss = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # The LM head only at target positions (`Student.token_loss`): the same loss without the full-width
        # logits over every prompt token, about a fifth of a SmolLM2 step. Only when the model is the student's
        # own object: under a DDP wrapper the wrapper's forward must run for gradients to be synchronised.
        if self.target_only_loss and not return_outputs and model is self.student.model \
                and self.student.kind == "causal":
            return self.student.token_loss(inputs, num_items_in_batch if self.model_accepts_loss_kwargs else None)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def make_sampler(self) -> StageBatchSampler:
        return StageBatchSampler(**self.sampler_args, world_size=self.args.world_size,
                                 grad_accum=self.args.gradient_accumulation_steps)

    def get_train_dataloader(self) -> DataLoader:
        loader = DataLoader(self.train_dataset, batch_sampler=self.make_sampler(), collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers)
        # accelerate shards the batch sampler across processes (BatchSamplerShard); the sampler emits each
        # optimizer step as world_size x grad_accum batches of one stage, so the shards stay in step.
        return self.accelerator.prepare(loader)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        start = time.time()
        counts = evaluate_pipeline(self.student, self.questions, self.stage_type,
                                   batch_size=self.args.per_device_eval_batch_size,
                                   restrict_answer=self.restrict_answer,
                                   rank=self.args.process_index, world_size=self.args.world_size,
                                   max_new_tokens=self.max_new_tokens)
        counts = counts.to(self.args.device)
        if self.args.world_size > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        correct, invalid, n = counts[:3].tolist()
        preds = counts[3:].tolist()
        # The first diagnostic of any recipe: does the answer change with the input? A student that learned
        # only the output format writes one letter for every question (top share near 1).
        metrics = {f"{metric_key_prefix}_accuracy": correct / n if n else 0.0,
                   f"{metric_key_prefix}_invalid_rate": invalid / n if n else 0.0,
                   f"{metric_key_prefix}_questions": int(n),
                   f"{metric_key_prefix}_distinct_answers": sum(c > 0 for c in preds),
                   f"{metric_key_prefix}_top_answer_share": max(preds) / n if n else 0.0,
                   f"{metric_key_prefix}_runtime": round(time.time() - start, 3)}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class RunRecorder(TrainerCallback):
    """Writes metrics.jsonl (loss with its stage, eval accuracy), keeps `best/`, reports progress."""

    def __init__(self, run: Path, student, step_stages: list[str],
                 on_progress: Callable[[dict[str, Any]], None] | None):
        self.run = run
        self.student = student
        self.step_stages = step_stages
        self.on_progress = on_progress
        self.last_logged = 0

    def stage_at(self, step: int) -> str:
        return self.step_stages[(step - 1) % len(self.step_stages)]

    def _window_stage(self, start: int, end: int) -> str:
        # A logging window normally sits inside one stage segment; if a segment ended inside it, name them all.
        seen: list[str] = []
        for g in range(start + 1, end + 1):
            s = self.stage_at(g)
            if s not in seen:
                seen.append(s)
        return "+".join(seen)

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_logged = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            # The last step is always evaluated and saved, whether or not it ends a cycle: otherwise the last
            # partial cycle's training would never be measured or kept.
            control.should_evaluate = True
            control.should_save = True
        if self.on_progress and state.is_world_process_zero:
            self.on_progress({"kind": "step", "step": state.global_step, "max_steps": state.max_steps,
                              "stage": self.stage_at(state.global_step), "epoch": state.epoch})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        rec: dict[str, Any] | None = None
        if "loss" in logs:
            rec = {"kind": "train", "step": state.global_step, "epoch": state.epoch, "loss": logs["loss"],
                   "stage": self._window_stage(self.last_logged, state.global_step),
                   "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                   "time": time.time()}
            self.last_logged = state.global_step
        elif "eval_accuracy" in logs:
            rec = {"kind": "eval", "step": state.global_step, "epoch": state.epoch,
                   "accuracy": logs["eval_accuracy"], "invalid_rate": logs["eval_invalid_rate"],
                   "questions": logs["eval_questions"], "distinct_answers": logs["eval_distinct_answers"],
                   "top_answer_share": logs["eval_top_answer_share"], "eval_s": logs.get("eval_runtime"),
                   "time": time.time()}
        if rec is None:
            return
        runs.append_metrics(self.run, rec)
        log.info(json.dumps(rec, sort_keys=True))
        if self.on_progress:
            self.on_progress(rec)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        # The Trainer wrote weights and tokenizer; adding the student's own files makes `--student
        # runs/x/checkpoints/checkpoint-N` load like best/ does.
        from tinythinker.students import STUDENT_FILE

        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir() and not (checkpoint / STUDENT_FILE).exists():
            self.student.save(checkpoint)
        if state.best_global_step != state.global_step:
            return
        # Written next to best/ then swapped in, so best/ is always a complete student folder.
        tmp = self.run / ".best.tmp"
        old = self.run / ".best.old"
        for p in (tmp, old):
            if p.exists():
                shutil.rmtree(p)
        self.student.save(tmp)
        (tmp / "phase1_best.json").write_text(json.dumps(
            {"step": state.global_step, "accuracy": state.best_metric}, indent=2) + "\n")
        best = self.run / runs.BEST
        if best.exists():
            best.rename(old)
        tmp.rename(best)
        if old.exists():
            shutil.rmtree(old)
        log.info("new best accuracy %.4f at step %d -> %s", state.best_metric, state.global_step, best)


@dataclass
class Phase1Result:
    run: str
    global_step: int
    best_accuracy: float | None
    best_step: int | None
    best_path: str | None
    train_s: float
    peak_rss_mb: float
    resumed_from: str | None
    stage_sizes: dict[str, int]
    evals: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _file_logging(run: Path) -> logging.Handler:
    handler = logging.FileHandler(run / runs.LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("tinythinker", "transformers.trainer"):
        lg = logging.getLogger(name)
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    return handler


def load_phase1_data(config: Phase1Config) -> tuple[list[tuple[Question, list[Rationale]]], list[Question]]:
    from tinythinker.data import load_examples, load_questions

    train = load_examples(config.data, "train", data_dir=config.data_dir, seed=config.split_seed,
                          limit=config.limit, source=config.source, path=config.path)
    val = load_questions(config.data, "validation", data_dir=config.data_dir, seed=config.split_seed,
                         limit=config.eval_limit, path=config.path)
    if not train:
        raise ValueError(f"no training questions in {config.data!r}")
    if not val:
        raise ValueError(f"no validation questions in {config.data!r}")
    return train, val


CROSS_ATTENTION = "crossattention"  # the name of BERT's decoder cross-attention modules


def scaled_optimizer(model, config: Phase1Config) -> torch.optim.Optimizer | None:
    """AdamW with the cross-attention weights at `lr x cross_attention_lr_scale` (None: the Trainer's own).

    Handed to a stock Trainer through `optimizers=`, which still builds the warm-up / decay schedule on it."""
    if config.cross_attention_lr_scale == 1.0:
        return None
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            # Decay weight matrices, not biases and norms (nanoGPT's rule).
            groups.setdefault((CROSS_ATTENTION in name, p.ndim >= 2), []).append(p)
    if not any(cross for cross, _ in groups):
        raise ValueError(f"cross_attention_lr_scale={config.cross_attention_lr_scale}, but the student has no "
                         f"'{CROSS_ATTENTION}' weights (only a bert2bert warm start has new cross-attention)")
    return torch.optim.AdamW(
        [{"params": ps, "lr": config.lr * (config.cross_attention_lr_scale if cross else 1.0),
          "weight_decay": config.weight_decay if decay else 0.0} for (cross, decay), ps in groups.items()],
        lr=config.lr)


def micro_batches(config: Phase1Config) -> int:
    """Forward passes per batch of `config.batch_size` examples (`Phase1Config.micro_batches`, resolved)."""
    return micro_batch_count(config.batch_size, config.micro_batches, on_gpu=torch.cuda.is_available())


def training_args(config: Phase1Config, run: Path, cycle: int, quiet: bool) -> TrainingArguments:
    pieces = micro_batches(config)
    return TrainingArguments(
        output_dir=str(run / runs.CHECKPOINTS),
        per_device_train_batch_size=config.batch_size // pieces,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.grad_accum * pieces,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler,
        # transformers 5 reads a warm-up below 1 as a share of the steps (its old warmup_ratio).
        warmup_steps=config.warmup_steps if config.warmup_steps > 0 else config.warmup_ratio,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        # The paper evaluates, saves and logs at one shared cadence; ours is one schedule cycle.
        eval_strategy="steps", eval_steps=config.eval_steps or cycle,
        save_strategy="steps", save_steps=config.eval_steps or cycle,
        # The latest (to resume from) and the best (the Trainer protects it; with a limit of 1 it would delete the
        # latest at the end of training instead). best/ holds a clean student copy of the best.
        save_total_limit=2,
        logging_strategy="steps", logging_steps=config.logging_steps or config.interval,
        metric_for_best_model="accuracy", greater_is_better=True,
        report_to="none", seed=config.seed, data_seed=config.seed,
        remove_unused_columns=False, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=quiet,
    )


def train_phase1(config: Phase1Config, on_progress: Callable[[dict[str, Any]], None] | None = None,
                 *, student=None, examples=None, questions=None) -> Phase1Result:
    """Train (or resume) a phase-1 run in `config.run`. `student` / `examples` / `questions` override what the
    config names (tests and the app pass objects already in memory); the config still records the names."""
    config.check()
    run = Path(config.run)
    if examples is None or questions is None:
        loaded_train, loaded_val = load_phase1_data(config)
        examples = loaded_train if examples is None else examples
        questions = loaded_val if questions is None else questions
    source_name = f"{config.data} rationales" + (f" ({config.source})" if config.source else "")
    check_unseen(config.student, questions, f"train --student {config.student}")
    own = load_own_context(config.own_context, questions) if config.own_context else None
    data = build_stage_data(examples, config.stage_type, config.answer_format, source_name, own)
    data = only_stages(data, config.trained_stages())
    cycle = cycle_steps(list(data.examples), config.interval, data.n_options, config.order)
    # Creating the arguments sets up the process group under torchrun / accelerate, so the run folder can be
    # made by the main process before the others look at it.
    args = training_args(config, run, cycle, quiet=on_progress is not None)
    with args.main_process_first(desc="run folder"):
        resumed = runs.prepare_run(run, config.resolved())  # errors on another config before any training
    handler = _file_logging(run) if args.process_index == 0 else None
    try:
        return _train(config, args, run, data, questions, student, on_progress, resumed)
    finally:
        if handler is not None:
            for name in ("tinythinker", "transformers.trainer"):
                logging.getLogger(name).removeHandler(handler)
            handler.close()


def _train(config, args, run, data, questions, student, on_progress, resumed) -> Phase1Result:
    from transformers.trainer_utils import set_seed

    from tinythinker.students import load_student

    set_seed(config.seed)
    if student is None:
        student = load_student(config.student)  # a run folder means its best/ (load_student)
    if config.lora_r and not student.is_lora:
        from tinythinker.students import apply_lora

        apply_lora(student, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets)
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad, so it works under LoRA's frozen
        # embeddings too.
        student.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # Saved with every checkpoint: score / constrain modes then consider this format's answers only.
    student.answer_format = config.answer_format
    log.info("stage examples %s (duplicates dropped %s, skipped %s)", data.sizes(), data.dropped_duplicates,
             data.skipped)
    dataset = encode_stage_data(student, data, config.max_source_length, config.max_target_length)
    sampler_args = dict(sizes=data.sizes(), stages=list(data.examples), batch_size=args.per_device_train_batch_size,
                        interval=config.interval, n_options=data.n_options, seed=config.seed, order=config.order,
                        lengths=[dataset.length(i) for i in range(len(dataset))] if config.group_by_length else None)
    probe = StageBatchSampler(**sampler_args, world_size=args.world_size, grad_accum=args.gradient_accumulation_steps)
    recorder = RunRecorder(run, student, probe.step_stages(), on_progress)
    optimizer = scaled_optimizer(student.model, config)
    trainer = Phase1Trainer(
        model=student.model, args=args, train_dataset=dataset, eval_dataset=questions,
        optimizers=(optimizer, None),
        data_collator=student.collator(), processing_class=student.tokenizer, callbacks=[recorder],
        student=student, sampler_args=sampler_args, questions=questions, stage_type=config.stage_type,
        restrict_answer=config.restrict_answer, max_new_tokens=config.eval_max_new_tokens,
    )
    trainer.target_only_loss = config.target_only_loss
    student.device = trainer.args.device  # the Trainer placed the model; generation must follow it
    checkpoint = runs.last_checkpoint(run)
    if checkpoint is not None:
        step = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
        dropped = runs.truncate_metrics(run, step) if trainer.is_world_process_zero() else 0
        log.info("resuming from %s (step %d); dropped %d metric records logged after it", checkpoint, step, dropped)
    elif resumed and trainer.is_world_process_zero():
        runs.truncate_metrics(run, 0)  # killed before its first checkpoint: start the record over
    log.info("training %s on %s, stage type %s, %d steps per epoch, cycle %d steps", config.student, config.data,
             config.stage_type, len(probe.step_stages()), args.eval_steps)
    start = time.time()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_s = time.time() - start
    evals = runs.read_metrics(run, "eval")
    best = max(evals, key=lambda r: r["accuracy"], default=None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = Phase1Result(
        run=str(run), global_step=trainer.state.global_step,
        best_accuracy=trainer.state.best_metric if trainer.state.best_metric is not None else (
            best["accuracy"] if best else None),
        best_step=trainer.state.best_global_step, best_path=str(run / runs.BEST) if (run / runs.BEST).is_dir()
        else None, train_s=round(train_s, 2), peak_rss_mb=round(peak, 1),
        resumed_from=str(checkpoint) if checkpoint else None, stage_sizes=data.sizes(), evals=evals,
    )
    if trainer.is_world_process_zero():
        runs.append_metrics(run, {"kind": "end", "step": trainer.state.global_step, "train_s": result.train_s,
                                  "best_accuracy": result.best_accuracy, "best_step": result.best_step,
                                  "peak_rss_mb": result.peak_rss_mb, "time": time.time()})
    return result
