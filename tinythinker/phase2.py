"""Phase 2: self-reflection, iterative DPO on the student's own rationales.

Each iteration, as in the paper's scripts/run_dpo.sh: the current student (phase 1's best checkpoint, then the
previous iteration's best) samples its own recalls on training questions (temperature 0.7, top-k off, the later
stages greedy), recalls that led to the right answer are preferred over those that did not; analyses are then
sampled on the chosen recalls and paired the same way (`tinythinker.pairs`). DPO + NLL (`tinythinker.dpo`)
trains against the iteration's starting model, alternating recall and analyze batches; the staged pipeline
picks the best checkpoint on validation; that checkpoint starts the next iteration and is its reference.

A run folder (`tinythinker.runs`) holds config.json, metrics.jsonl, `iter_<k>/` (pairs.jsonl, best/) per
finished iteration, and best/ (the iteration with the best validation accuracy). An iteration is built in
`iter_<k>.partial/` and renamed when complete; its traces and pairs go to the store at that moment, so a
failure or a kill leaves no half iteration anywhere. The same command on the same folder resumes after the
last complete iteration.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from tinythinker import runs, stages
from tinythinker.pairs import AnalyzeContext, Pair, analyze_pairs, micro_batch_count, pair_stats, recall_pairs
from tinythinker.types import Question, Rationale, Trace

log = logging.getLogger("tinythinker.phase2")

# Which stages get DPO pairs (the paper's `--stage_type` of scripts/dpo.py).
DPO_STAGE_TYPES: dict[str, tuple[str, ...]] = {
    "recall": (stages.RECALL,),
    "analyze": (stages.ANALYZE,),
    "recall_analyze": (stages.RECALL, stages.ANALYZE),
}
PAIR_MODES = ("auto", "curated", "both")
ITER = "iter_{}"
PAIRS_FILE = "pairs.jsonl"
TRACES_KEY = "val_traces"  # an evaluation result's validation traces

Progress = Callable[[dict[str, Any]], None] | None


class ReflectError(ValueError):
    """Phase 2 cannot go on as asked; the message says why and what to do."""


@dataclass
class ReflectConfig:
    from_run: str  # a phase-1 run folder (`python -m tinythinker train --run ...`)
    run: str = "runs/phase2"
    iterations: int = 5  # scripts/run_dpo.sh DPO_ITERS=(1 2 3 4 5); each one resumable, the best one kept
    samples: int = 10  # recalls sampled per question (scripts/run_dpo.sh GENERATION_TIMES=10)
    stage_type: str = "recall_analyze"  # which stages get DPO pairs
    limit: int | None = None  # training questions sampled
    eval_limit: int | None = None  # validation questions (the first N)
    beta: float = 0.5  # scripts/dpo.py
    alpha: float = 0.5  # rpo_alpha, scripts/dpo.py
    lr: float = 5e-6  # scripts/run_dpo.sh LEARNING_RATE
    batch_size: int = 32  # scripts/run_dpo.sh TRAINING_PER_GPU_BATCH_SIZE
    # Memory, not the experiment: an optimizer step of `batch_size` pairs as `micro_batches` micro-batches (the DPO
    # term is the same per-pair mean; the NLL term is normalised per micro-batch's tokens), and activation
    # checkpointing. On CPU a SmolLM2 step at batch 8 in one piece peaked at 10.2 GB. None: on CPU micro-batches
    # of at most pairs.CPU_MICRO_BATCH pairs, on a GPU one piece.
    micro_batches: int | None = None
    gradient_checkpointing: bool = False
    # scripts/dpo.py: max_steps = 10 schedule cycles, evaluated and saved every cycle, best kept.
    cycles: int = 10
    temperature: float = 0.7  # utils/config.py, both recall and analyze sampling
    seed: int = 0
    pairs: str = "auto"  # auto | curated | both
    # The paper's: a question with more wrong sampled recalls than right ones gets teacher recalls on the chosen
    # side. False: the student's own recalls only. (Here the teacher's ECQA recalls were about twice as long as the
    # student's, and DPO learned length: bench/RESULTS.md, "Why reflection hurt".)
    teacher_fill: bool = True
    db: str | None = None  # store path (None: env TINYTHINKER_DB, else annotations/tinythinker.db)
    sample_batch_size: int = 32
    eval_batch_size: int = 32
    # LoRA through peft for a student loaded without one (0 = full fine-tuning, the paper). A phase-1 run trained
    # with LoRA loads as a peft model and keeps training its own adapter; these then change nothing.
    lora_r: int = 0
    lora_alpha: int | None = None
    lora_dropout: float = 0.05
    lora_targets: str | None = None  # comma-separated module names; None = the student kind's default
    # With curated pairs (--pairs curated / both) the pair checks (tinythinker.pair_checks) run before anything
    # else: True refuses the run when one fails, False (the default) only reports the table.
    refuse_failing_pairs: bool = False

    def check(self) -> None:
        if self.stage_type not in DPO_STAGE_TYPES:
            raise ReflectError(f"unknown --stage-type {self.stage_type!r} for reflect; choose one of "
                               f"{', '.join(DPO_STAGE_TYPES)}")
        if self.pairs not in PAIR_MODES:
            raise ReflectError(f"unknown --pairs {self.pairs!r}; choose one of {', '.join(PAIR_MODES)}")
        for name in ("iterations", "batch_size", "cycles", "sample_batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ReflectError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.micro_batches is not None and (self.micro_batches < 1 or self.batch_size % self.micro_batches):
            raise ReflectError(f"--micro-batches must be at least 1 and divide --batch-size {self.batch_size}, got "
                               f"{self.micro_batches} (each optimizer step is that many equal micro-batches of one "
                               "stage's pairs)")
        if self.samples < 2 and self.pairs != "curated":
            raise ReflectError(f"--samples must be at least 2 to compare the student's own recalls, got {self.samples}")
        for name in ("limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ReflectError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.lr <= 0 or self.beta <= 0 or self.alpha < 0 or self.temperature <= 0:
            raise ReflectError("--lr, --beta and the temperature must be positive and --alpha not negative")
        if self.lora_r < 0 or not 0 <= self.lora_dropout < 1 or (self.lora_alpha is not None and self.lora_alpha < 1):
            raise ReflectError("--lora-r must not be negative, --lora-alpha must be at least 1 and --lora-dropout "
                               "in [0, 1)")

    def resolved(self) -> dict[str, Any]:
        d = asdict(self)
        d["command"] = "reflect"
        d.pop("db")  # where the store lives does not change the experiment
        # A gate before training, not part of the experiment; popping it also lets runs begun before the option
        # existed resume.
        d.pop("refuse_failing_pairs")
        if d["teacher_fill"]:  # recorded only when off: runs begun before the option existed (on) resume
            d.pop("teacher_fill")
        for memory_knob in ("micro_batches", "gradient_checkpointing"):  # same steps on the same pairs
            d.pop(memory_knob)
        return d


@dataclass
class Phase1Source:
    """What phase 2 needs from a phase-1 run: its best checkpoint and how it was trained."""

    path: Path
    best: Path
    config: dict[str, Any]

    @property
    def student_stage_type(self) -> str:
        return self.config.get("stage_type", stages.DEFAULT_STAGE_TYPE)


def read_phase1(from_run: str | Path, dpo_stage_type: str) -> Phase1Source:
    """Check that `from_run` is a phase-1 run whose student has the stages DPO will train."""
    path = Path(from_run)
    if not path.is_dir():
        shipped = _shipped_phase1(str(from_run))
        if shipped is not None:
            return _check_stages(shipped, dpo_stage_type)
        raise ReflectError(f"--from {path}: no such folder; give a phase-1 run folder "
                           "(made by `python -m tinythinker train --run ...`) or the name of a shipped phase-1 "
                           "student (demo/models/)")
    try:
        config = runs.read_config(path)
    except runs.RunError as e:
        raise ReflectError(f"--from {path} is not a phase-1 run: {e}") from None
    if config.get("command") != "train":
        what = f"a {config['command']!r} run" if config.get("command") else "no run config"
        raise ReflectError(f"--from {path} is not a phase-1 run: {path / runs.CONFIG} holds {what}, "
                           "not one made by `python -m tinythinker train`")
    best = path / runs.BEST
    if not best.is_dir() or not any(best.iterdir()):
        raise ReflectError(f"--from {path}: the run has no best checkpoint ({best}); let phase 1 evaluate at "
                           "least once (finish a schedule cycle) before reflecting")
    return _check_stages(Phase1Source(path, best, config), dpo_stage_type)


def _shipped_phase1(name: str) -> Phase1Source | None:
    """A phase-1 student that ships with the app (`demo/models/<name>`), as a phase-1 source: its folder is the
    checkpoint, its shipped.json says the data and answer settings phase 1 used. None: no shipped model of that
    name. A shipped reflected model or baseline is refused: phase 2 starts from phase 1."""
    from tinythinker.shipped import BASELINE, PHASE1, get_shipped

    model = get_shipped(name)
    if model is None:
        return None
    if model.role == BASELINE:
        raise ReflectError(f"--from {name}: the shipped answer-only baseline (stage type {model.stage_type}, no "
                           "Recall to sample); phase 2 starts from a three-stage phase-1 student")
    if model.role != PHASE1:
        raise ReflectError(f"--from {name}: a shipped {model.role} model; phase 2 starts from a phase-1 student "
                           f"(its parent is {model.parent!r})")
    config = {"command": "train", "data": model.data or "csqa", "stage_type": model.stage_type,
              "answer_format": model.answer_format,
              "restrict_answer": False if model.restrict_answer == "free" else model.restrict_answer,
              "seed": 0, "student": name}
    return Phase1Source(model.folder, model.folder, config)


def _check_stages(source: Phase1Source, dpo_stage_type: str) -> Phase1Source:
    path = source.path
    have = stages.stages_of(source.student_stage_type)
    need = set(DPO_STAGE_TYPES[dpo_stage_type]) | {stages.RECALL}  # analyses are sampled on chosen recalls
    missing = sorted(need - set(have))
    if missing:
        raise ReflectError(f"--from {path}: its student was trained with stage type "
                           f"{source.student_stage_type!r}, which has no {' / '.join(missing)} stage; "
                           f"--stage-type {dpo_stage_type} needs a phase-1 run of recall_analyze_summarize")
    return source


# -- sampling ------------------------------------------------------------------------------------------------

def sample_recalls(student, questions: list[Question], config: ReflectConfig, stage_type: str,
                   restrict_answer: bool | str, on_progress=None, seed: int = 0) -> list[Trace]:
    """`samples` traces per question: the recall sampled (utils/config.py for DPO data: temperature 0.7,
    top_k 0 = off), analyze and summarize greedy."""
    from tinythinker.pipeline import Sampling, run_pipeline

    sampling = Sampling.sampled(temperature=config.temperature, top_k=0, seed=seed, sample_stages=(stages.RECALL,))
    return run_pipeline(student, questions, stage_type=stage_type, sampling=sampling,
                        batch_size=config.sample_batch_size, num_samples=config.samples,
                        restrict_answer=restrict_answer, on_progress=on_progress)


def sample_analyses(student, contexts: list[AnalyzeContext], config: ReflectConfig, stage_type: str,
                    restrict_answer: bool | str, on_progress=None, seed: int = 0) -> list[Trace]:
    """`samples` traces per chosen recall: the recall kept, the analyses sampled with the recall's settings
    (generate.py swaps the two configs for the analyze data), summarize greedy."""
    from tinythinker.pipeline import Sampling, complete_traces

    sampling = Sampling.sampled(temperature=config.temperature, top_k=0, seed=seed,
                                sample_stages=(stages.ANALYZE,))
    kept = [Trace(question=c.question, recall=c.recall, analyses={}, summary="", predicted=None, correct=None)
            for c in contexts]
    return complete_traces(student, kept, from_stage=stages.ANALYZE, stage_type=stage_type, sampling=sampling,
                           batch_size=config.sample_batch_size, num_samples=config.samples,
                           restrict_answer=restrict_answer, on_progress=on_progress)


# -- pairs -----------------------------------------------------------------------------------------------

def curated_pairs(store, dpo_stages: tuple[str, ...]) -> list[Pair]:
    """The store's curated pairs (source CURATED, their provenance as the store made it) for the stages trained."""
    return [p for p in store.curated_pairs() if p.stage in dpo_stages]


def schedule(pairs: list[Pair], batch_size: int, cycles: int, seed: int) -> tuple[list[int], int]:
    """The training order (indices into `pairs`) and the steps per cycle: `tinythinker.schedule.dpo_order`
    (scripts/dpo.py's recall-then-analyze cycles) over the pairs' stages."""
    from tinythinker.schedule import dpo_order

    return dpo_order([p.stage for p in pairs], batch_size, cycles, seed)


# -- training ------------------------------------------------------------------------------------------------

class CycleEval(TrainerCallback):
    """At the end of every schedule cycle: the staged pipeline on validation; the best checkpoint is kept."""

    def __init__(self, student, evaluate: Callable[[Any], dict[str, Any]], best_dir: Path, cycle_steps: int,
                 record: Callable[[dict[str, Any]], None], on_progress: Progress):
        self.student, self.evaluate, self.best_dir = student, evaluate, best_dir
        self.cycle_steps, self.record, self.on_progress = cycle_steps, record, on_progress
        self.best: float | None = None
        self.best_traces: list[Trace] = []  # the validation traces of the checkpoint in best_dir
        self.evals: list[dict[str, Any]] = []

    def on_step_end(self, args, state, control, **kwargs):
        if self.on_progress:
            self.on_progress({"kind": "step", "step": state.global_step, "max_steps": state.max_steps})
        if state.global_step % self.cycle_steps and state.global_step != state.max_steps:
            return
        result = self.evaluate(self.student)
        traces = result.pop(TRACES_KEY, None)
        rec = {"kind": "eval", "local_step": state.global_step, **result}
        self.evals.append(rec)
        self.record(dict(rec))
        if self.best is None or result["accuracy"] > self.best:
            self.best = result["accuracy"]
            self.best_traces = traces or []
            if self.best_dir.exists():
                shutil.rmtree(self.best_dir)
            self.student.save(self.best_dir)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "dpo_loss" in logs:
            self.record({"kind": "dpo", "local_step": state.global_step, "lr": logs.get("learning_rate"),
                         **{k: logs[k] for k in ("loss", "dpo_loss", "nll_loss", "rewards/chosen",
                                                 "rewards/rejected", "rewards/margins", "rewards/accuracies")
                            if k in logs}})


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def evaluator(questions: list[Question], stage_type: str, batch_size: int, restrict_answer: bool | str):
    """Validation as the paper selects checkpoints: the greedy staged pipeline's accuracy."""
    def evaluate(student) -> dict[str, Any]:
        from tinythinker.pipeline import GREEDY, accuracy, run_pipeline

        was_training = student.model.training
        student.model.eval()
        try:
            traces = run_pipeline(student, questions, stage_type=stage_type, sampling=GREEDY,
                                  batch_size=batch_size, restrict_answer=restrict_answer)
        finally:
            student.model.train(was_training)
        acc = accuracy(traces)
        # The traces go with the result (never into metrics.jsonl): the best cycle's are the new model's own
        # validation traces, filed in the store when its iteration completes.
        return {"accuracy": acc["accuracy"], "invalid_rate": acc["invalid_rate"], "n": acc["n"], TRACES_KEY: traces}
    return evaluate


def train_iteration(student, pairs: list[Pair], config: ReflectConfig, workdir: Path, evaluate,
                    record: Callable[[dict[str, Any]], None], on_progress: Progress,
                    max_prompt_length: int, max_completion_length: int) -> dict[str, Any]:
    """DPO on `pairs` from the student as it is now (also the reference); the best cycle's checkpoint is
    saved to workdir/best. Returns the iteration's training summary."""
    from tinythinker.dpo import DPOConfig, build_trainer, pair_dataset

    dataset, kept = pair_dataset(student, pairs, max_prompt_length, max_completion_length)
    too_long = len(pairs) - len(kept)
    if not kept:
        raise ReflectError(f"every pair has a completion over {max_completion_length} tokens (the phase-1 run's "
                           "max_target_length); nothing to train on")
    order, cycle_steps = schedule([pairs[i] for i in kept], config.batch_size, config.cycles, config.seed)
    max_steps = math.ceil(len(order) / config.batch_size)
    if config.gradient_checkpointing:
        # Non-reentrant: works under LoRA's frozen embeddings too (no input needs to require grad).
        student.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # The order is visited sequentially, so an optimizer step's micro-batches are consecutive slices of one
    # stage's batch: the schedule is unchanged.
    pieces = micro_batch_count(config.batch_size, config.micro_batches, torch.cuda.is_available())
    args = DPOConfig(
        output_dir=str(workdir / "trainer"), per_device_train_batch_size=config.batch_size // pieces,
        gradient_accumulation_steps=pieces,
        learning_rate=config.lr, lr_scheduler_type="cosine", warmup_steps=0.1,  # scripts/dpo.py
        max_steps=max_steps, logging_steps=1, save_strategy="no", eval_strategy="no",
        beta=config.beta, rpo_alpha=config.alpha, seed=config.seed, data_seed=config.seed,
        max_prompt_length=max_prompt_length, max_completion_length=max_completion_length,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=on_progress is not None, dataloader_num_workers=0,
    )
    cb = CycleEval(student, evaluate, workdir / runs.BEST, cycle_steps, record, on_progress)
    if on_progress:
        on_progress({"kind": "phase", "phase": "reference", "pairs": len(kept), "steps": max_steps})
    trainer = build_trainer(student, dataset, args, order=order, callbacks=[cb])
    # Progress goes to on_progress and the numbers to metrics.jsonl; the Trainer's own printing would only
    # interleave raw dicts with them.
    trainer.remove_callback(PrinterCallback)
    t0 = time.time()
    trainer.train()
    shutil.rmtree(workdir / "trainer", ignore_errors=True)
    logs = [h for h in trainer.state.log_history if "dpo_loss" in h]
    last_cycle = [h for h in logs if h["step"] > max_steps - cycle_steps]
    best = max(cb.evals, key=lambda e: e["accuracy"])
    return {
        "steps": max_steps, "cycle_steps": cycle_steps, "pairs_trained": len(kept), "too_long": too_long,
        "train_s": round(time.time() - t0, 1),
        "dpo_loss": _mean([h["dpo_loss"] for h in logs]),
        "reward_margin": _mean([h["rewards/margins"] for h in logs]),
        "reward_accuracy": _mean([h["rewards/accuracies"] for h in logs]),
        "final_dpo_loss": _mean([h["dpo_loss"] for h in last_cycle]),
        "final_reward_margin": _mean([h["rewards/margins"] for h in last_cycle]),
        "final_reward_accuracy": _mean([h["rewards/accuracies"] for h in last_cycle]),
        "val_acc": best["accuracy"], "val_invalid_rate": best["invalid_rate"], "best_local_step": best["local_step"],
        "evals": [{"local_step": e["local_step"], "accuracy": e["accuracy"]} for e in cb.evals],
        TRACES_KEY: cb.best_traces,
    }


# -- the loop --------------------------------------------------------------------------------------------------

@dataclass
class ReflectResult:
    run: str
    baseline_val_acc: float | None
    iterations: list[dict[str, Any]]
    best_iteration: int | None
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_reflect_data(source: Phase1Source, config: ReflectConfig
                      ) -> tuple[list[Question], dict[str, list[Rationale]], list[Question]]:
    from tinythinker.data import load_examples, load_questions

    p1 = source.config
    # Phase 1's data, file (`--data jsonl / paper --path`) and seed, so that a --limit subset is drawn the way
    # phase 1 drew its own.
    examples = load_examples(p1.get("data", "csqa"), "train", data_dir=p1.get("data_dir"), seed=runs.split_seed(p1),
                             limit=config.limit, source=p1.get("source"), path=p1.get("path"))
    val = load_questions(p1.get("data", "csqa"), "validation", data_dir=p1.get("data_dir"),
                         seed=runs.split_seed(p1), limit=config.eval_limit, path=p1.get("path"))
    if not examples:
        raise ReflectError(f"no training questions in {p1.get('data')!r}")
    if not val:
        raise ReflectError(f"no validation questions in {p1.get('data')!r}")
    questions = [q for q, _ in examples if q.answer is not None]
    teacher = {q.id: list(rs) for q, rs in examples}
    return questions, teacher, val


def _open_store(path: str | None):
    from tinythinker.store import Store

    return Store(path)


def _completed(run: Path, iterations: int) -> list[dict[str, Any]]:
    done = []
    for rec in runs.read_metrics(run, "iteration"):
        if rec["iteration"] == len(done) + 1 and (run / ITER.format(rec["iteration"]) / runs.BEST).is_dir():
            done.append(rec)
    return done[:iterations]


def reflect(config: ReflectConfig, on_progress: Progress = None, *, student=None, questions=None,
            teacher=None, val_questions=None) -> ReflectResult:
    """Run (or resume) phase 2 into `config.run`. `student` / `questions` / `teacher` / `val_questions`
    override what the phase-1 run names (tests and the app pass objects already in memory)."""
    from tinythinker.students import load_student

    config.check()
    source = read_phase1(config.from_run, config.stage_type)
    p1 = source.config
    if questions is None or teacher is None or val_questions is None:
        q, t, v = load_reflect_data(source, config)
        questions = q if questions is None else questions
        teacher = t if teacher is None else teacher
        val_questions = v if val_questions is None else val_questions
    stage_type = source.student_stage_type
    restrict = p1.get("restrict_answer", False)
    evaluate = evaluator(val_questions, stage_type, config.eval_batch_size, restrict)
    max_prompt, max_completion = int(p1.get("max_source_length", 512)), int(p1.get("max_target_length", 128))
    dpo_stages = DPO_STAGE_TYPES[config.stage_type]
    store = _open_store(config.db)
    try:
        check_curated_pairs(store, config, dpo_stages, on_progress)
    except BaseException:
        store.close()
        raise

    run = Path(config.run)
    try:
        resumed = runs.prepare_run(run, config.resolved())
    except runs.RunError as e:
        raise ReflectError(str(e)) from None
    done = _completed(run, config.iterations) if resumed else []
    baseline = runs.read_metrics(run, "baseline") if resumed else []
    last_step = done[-1]["step"] if done else 0
    if resumed:
        runs.truncate_metrics(run, last_step)
        for p in run.glob("iter_*.partial"):
            shutil.rmtree(p)
        for p in run.glob("iter_*"):
            if p.is_dir() and p.name not in {ITER.format(r["iteration"]) for r in done}:
                shutil.rmtree(p)
    t_start = time.time()

    def record(rec: dict[str, Any]) -> None:
        runs.append_metrics(run, rec)

    def progress(event: dict[str, Any]) -> None:
        if on_progress:
            on_progress(event)

    shared = IterationContext(config=config, questions=questions, teacher=teacher, stage_type=stage_type,
                              restrict=restrict, dpo_stages=dpo_stages, store=store, run=run, evaluate=evaluate,
                              max_prompt=max_prompt, max_completion=max_completion, progress=progress)

    try:
        if baseline:
            baseline_acc = baseline[0]["accuracy"]
        else:
            progress({"kind": "phase", "phase": "baseline", "iteration": 0})
            start = student if student is not None else load_student(source.best)
            base = evaluate(start)
            base.pop(TRACES_KEY, None)
            baseline_acc = base["accuracy"]
            record({"kind": "baseline", "iteration": 0, "step": 0, **base})
            # runs.summarize_run reads "eval" records: the starting point is one of them.
            record({"kind": "eval", "iteration": 0, "step": 0, **base})
        for k in range(len(done) + 1, config.iterations + 1):
            start_path = source.best if k == 1 else run / ITER.format(k - 1) / runs.BEST
            current = student if (k == 1 and student is not None) else load_student(start_path)
            current = with_lora(current, config)
            rec = _iteration(k, current, str(start_path), last_step, shared)
            last_step = rec["step"]
            done.append(rec)
            _copy_best(run, done)
        record({"kind": "end", "step": last_step, "wall_s": round(time.time() - t_start, 1)})
    except ReflectError:
        if not done and not resumed:
            shutil.rmtree(run, ignore_errors=True)  # a fresh run that built nothing leaves nothing behind
        raise
    finally:
        store.close()
    best_it = max(done, key=lambda r: r["val_acc"])["iteration"] if done else None
    return ReflectResult(str(run), baseline_acc, done, best_it, round(time.time() - t_start, 1))


def check_curated_pairs(store, config: ReflectConfig, dpo_stages: tuple[str, ...], on_progress: Progress = None):
    """The pair checks on the curated pairs this run would train on, before anything is written or trained.
    A failing check refuses the run with --refuse-failing-pairs and is reported (progress event, log) without it.
    Returns the report, or None when no curated pairs are used (none stored: iteration 1 says what is missing)."""
    if config.pairs not in ("curated", "both"):
        return None
    pairs = curated_pairs(store, dpo_stages)
    if not pairs:
        return None
    from tinythinker.pair_checks import check_pairs

    report = check_pairs(pairs, store=store)
    if on_progress:
        on_progress({"kind": "pair_checks", "pairs": report.n, "ok": report.ok, "failed": report.failed,
                     "table": report.table, "text": report.text()})
    log.info("pair checks on %d curated pairs:\n%s", report.n, report.text())
    if report.ok:
        return report
    failures = report.failures()
    what = f"the {report.n} curated pairs for {', '.join(dpo_stages)} fail {len(failures)} pair check(s): "
    if config.refuse_failing_pairs:
        raise ReflectError(f"--refuse-failing-pairs: {what}{'; '.join(failures)}. Nothing was trained or written. "
                           "Relabel or remove those pairs in Annotate (its pair checks show the same table), or "
                           "run without --refuse-failing-pairs to train on them anyway.")
    log.warning("%s%s; training on them anyway (--refuse-failing-pairs refuses them)", what, "; ".join(failures))
    return report


def with_lora(student, config: ReflectConfig):
    """The student with fresh LoRA adapters when --lora-r asks for them and it carries none yet; a student loaded
    as a peft model (a phase-1 run trained with LoRA, or an earlier iteration's best) keeps training its own."""
    if config.lora_r <= 0 or hasattr(student.model, "peft_config"):
        return student
    from tinythinker import students

    if not hasattr(students, "apply_lora"):
        raise ReflectError("--lora-r needs students.apply_lora, which this installation lacks")
    return students.apply_lora(student, config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                               targets=config.lora_targets)


def _copy_best(run: Path, done: list[dict[str, Any]]) -> None:
    best = max(done, key=lambda r: r["val_acc"])
    tmp = run / ".best.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run / ITER.format(best["iteration"]) / runs.BEST, tmp)
    shutil.rmtree(run / runs.BEST, ignore_errors=True)
    tmp.rename(run / runs.BEST)


@dataclass
class IterationContext:
    """What every iteration of one phase-2 run shares."""

    config: ReflectConfig
    questions: list[Question]  # training questions the student samples on
    teacher: dict[str, list[Rationale]]  # their teacher rationales, by question id (recall_pairs' chosen fill)
    stage_type: str  # the student's (phase 1's) stage type
    restrict: bool | str  # phase 1's restrict_answer, for sampling and validation alike
    dpo_stages: tuple[str, ...]  # the stages that get pairs
    store: Any  # tinythinker.store.Store: curated pairs in, traces and pairs out
    run: Path
    evaluate: Callable[[Any], dict[str, Any]]
    max_prompt: int
    max_completion: int
    progress: Callable[[dict[str, Any]], None]


def _iteration(k: int, student, model_name: str, step_offset: int, ctx: IterationContext) -> dict[str, Any]:
    config, questions, teacher, stage_type = ctx.config, ctx.questions, ctx.teacher, ctx.stage_type
    restrict, dpo_stages, store, run, progress = ctx.restrict, ctx.dpo_stages, ctx.store, ctx.run, ctx.progress
    t0 = time.time()
    work = run / (ITER.format(k) + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        traces: list[Trace] = []
        auto: list[Pair] = []
        stats: dict[str, Any] = {}
        if config.pairs in ("auto", "both"):
            progress({"kind": "phase", "phase": "sample_recall", "iteration": k, "questions": len(questions)})
            recall_traces = sample_recalls(student, questions, config, stage_type, restrict,
                                           _sub(progress, "sample_recall", k), seed=config.seed * 1000 + k)
            for t in recall_traces:
                t.sampling = {**t.sampling, "reflect": "recall"}
            traces += recall_traces
            fill = teacher if config.teacher_fill else None
            r_pairs, contexts = recall_pairs(recall_traces, fill, seed=config.seed * 1000 + k)
            _note_sampling(r_pairs, config, stages.RECALL, config.seed * 1000 + k)
            stats["recall_traces"] = pair_stats(recall_traces, fill)
            stats["recall_pairs"], stats["chosen_recalls"] = len(r_pairs), len(contexts)
            if stages.RECALL in dpo_stages:
                auto += r_pairs
            if stages.ANALYZE in dpo_stages and contexts:
                progress({"kind": "phase", "phase": "sample_analyze", "iteration": k, "recalls": len(contexts)})
                analyze_traces = sample_analyses(student, contexts, config, stage_type, restrict,
                                                 _sub(progress, "sample_analyze", k), seed=config.seed * 1000 + k)
                for t in analyze_traces:
                    t.sampling = {**t.sampling, "reflect": "analyze"}
                traces += analyze_traces
                a_pairs = analyze_pairs(analyze_traces, contexts, seed=config.seed * 1000 + k, stage_type=stage_type)
                _note_sampling(a_pairs, config, stages.ANALYZE, config.seed * 1000 + k)
                auto += a_pairs
                stats["analyze_traces"] = {
                    "right": sum(t.predicted == t.question.answer for t in analyze_traces),
                    "other_option": sum(t.predicted is not None and t.predicted != t.question.answer
                                        for t in analyze_traces),
                    "invalid": sum(t.predicted is None for t in analyze_traces)}
                stats["analyze_pairs"] = len(a_pairs)
        curated = curated_pairs(store, dpo_stages) if config.pairs in ("curated", "both") else []
        pairs = auto + curated
        counts = {s: sum(p.stage == s for p in pairs) for s in dpo_stages}
        if not pairs:
            raise ReflectError(_no_pairs_message(k, config, traces, stats))
        # What the store would refuse at the end of the iteration is refused now, before any training.
        from tinythinker.store.pairs import check_pair

        for i, p in enumerate(auto):
            check_pair(_store_pair(p, model_name), f"iteration {k} pair #{i}")
        progress({"kind": "phase", "phase": "train", "iteration": k, "pairs": counts})
        with open(work / PAIRS_FILE, "w") as f:
            for p in pairs:
                f.write(json.dumps(p.to_dict()) + "\n")

        def record(rec: dict[str, Any]) -> None:
            step = step_offset + rec.pop("local_step")
            runs.append_metrics(run, {**rec, "iteration": k, "step": step})

        summary = train_iteration(student, pairs, config, work, ctx.evaluate, record, progress, ctx.max_prompt,
                                  ctx.max_completion)
        # The iteration is complete: file its traces and pairs, then make it visible.
        if traces:
            store.import_traces(traces, model=model_name, iteration=k)
        store.add_pairs([_store_pair(p, model_name) for p in auto], iteration=k)
        final = run / ITER.format(k)
        # The new model's own validation traces (its best cycle's evaluation), under the name the next iteration
        # starts from: what Compare and Annotate then see of it, its lineage in the store.
        val_traces = summary.pop(TRACES_KEY, None) or []
        if val_traces:
            new_model = str(final / runs.BEST)
            for t in val_traces:
                t.model, t.sampling = new_model, {**t.sampling, "reflect": "validation"}
            store.import_traces(val_traces, model=new_model, iteration=k)
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    rec = {"kind": "iteration", "iteration": k, "step": step_offset + summary["steps"], "start": model_name,
           "traces": len(traces), "pairs": counts, "pairs_total": len(pairs), "auto_pairs": len(auto),
           "curated_pairs": len(curated), "trace_stats": stats, "val_traces": len(val_traces),
           "wall_s": round(time.time() - t0, 1),
           **{key: v for key, v in summary.items() if key != "evals"}, "evals": summary["evals"]}
    runs.append_metrics(run, rec)
    progress({"kind": "iteration", **rec})
    return rec


def _note_sampling(pairs: list[Pair], config: ReflectConfig, stage: str, seed: int) -> None:
    """Each automatic pair's provenance gets the sampling that wrote its texts (sample_recalls / sample_analyses):
    with the start checkpoint and the iteration, what it takes to tell where a pair came from."""
    sampling = {"sampled_stage": stage, "temperature": config.temperature, "top_k": 0, "seed": seed,
                "num_samples": config.samples}
    for p in pairs:
        p.provenance["sampling"] = dict(sampling)


def _store_pair(p: Pair, model_name: str) -> Pair:
    """An automatic pair as the store keeps it: its provenance adds the checkpoint that sampled it and where its
    chosen text came from (add_pairs files every one under source "auto")."""
    return replace(p, provenance={"model": model_name, "chosen_from": p.source, **p.provenance})


def _sub(progress, phase: str, k: int):
    # run_pipeline reports (done, total) counts of (question, sample) items.
    def f(done: int, total: int) -> None:
        progress({"kind": "sampling", "phase": phase, "iteration": k, "done": done, "total": total})
    return f


def _no_pairs_message(k: int, config: ReflectConfig, traces: list[Trace], stats: dict[str, Any]) -> str:
    """What happened, in the terms of how pairs are built (`tinythinker.pairs`): a recall pair needs a question with
    a wrong sampled recall and a right one or, when every sample is wrong, a teacher recall; an analyze pair needs
    an analysis sampled on a chosen recall that led to another listed option."""
    head = (f"iteration {k}: no preference pairs were built from {len(traces)} sampled traces "
            f"(--pairs {config.pairs}, --stage-type {config.stage_type}).")
    why: list[str] = []
    if config.pairs in ("auto", "both"):
        s = stats.get("recall_traces")
        if s:
            why.append(
                f"Of {s['questions']} questions, {s['all_right']} had every sampled trace right (no wrong recall "
                f"to reject), {s['mixed']} some right and some wrong, and {s['all_wrong']} every one wrong, "
                f"{s.get('all_wrong_with_teacher', 0)} of them with a teacher recall to take the chosen side.")
            could = s["mixed"] + s.get("all_wrong_with_teacher", 0)
            if stages.RECALL in DPO_STAGE_TYPES[config.stage_type] and could:
                why.append(f"Those {could} questions still gave no recall pair: their chosen and rejected recalls "
                           "were the same texts (or empty), which states no preference.")
        if stages.ANALYZE in DPO_STAGE_TYPES[config.stage_type]:
            a = stats.get("analyze_traces")
            if not stats.get("chosen_recalls"):
                why.append("Analyses are sampled on chosen recalls, and there were none.")
            elif a:
                why.append(f"Of the analyses sampled on {stats['chosen_recalls']} chosen recalls, {a['right']} traces "
                           f"led to the answer, {a['other_option']} to another option and {a['invalid']} to no valid "
                           "answer; an analyze pair needs one that led to another option, with a text that differs "
                           "from the chosen side's.")
    if config.pairs in ("curated", "both"):
        why.append("The store holds no curated pairs for these stages (label traces good/bad in the store first).")
    return (f"{head} {' '.join(why)} Try more questions (--limit), more samples (--samples), or --pairs both with "
            "curated pairs; nothing was written for this iteration.").replace("  ", " ")
