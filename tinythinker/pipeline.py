"""Staged inference: Recall -> Analyze (every option) -> Summarize, batched, returning `Trace`s.

Batching: questions are sorted by length and cut into batches of `batch_size`; each stage is ONE generate call per
batch: Recall for the batch's questions, Analyze for every option of every question of the batch, Summarize for
the batch. Greedy results do not depend on the batching (padding is masked), which `bench/pipeline_speed.py` and
the tests check against a one-question-one-option-per-call run.

Sampling: per stage (`StageSampling`), seeded. Each generate call seeds torch from `Sampling.seed`, the batch
index and the stage, so a run is reproducible given the same questions, batch size and seed.

restrict_answer: how the Summarize stage writes its answer (`ANSWER_MODES`).
- False / "free": free generation, the paper's behaviour; an answer the regex cannot read counts as invalid.
- True / "constrain": the stage may write only one of the question's valid answer texts (`stages.answer_choices`,
  every answer format), by constrained decoding (`Student.generate_choice`: a prefix tree of the valid answers'
  tokens). One batched generate call that samples like free decoding; the model decides at the first token where
  the choices differ, so with the letter first it decides at the letter.
- "score": rank classification. Every valid answer text is scored by its mean token log-likelihood given the
  Summarize input and the best one is written. It looks at the whole answer, so with the option's words in the
  target (`text_letter`) the choice rests on the words, not on one letter token. Greedy only (it ignores
  sampling), and one forward pass per candidate.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tinythinker import stages
from tinythinker.stages import ANALYZE, RECALL, SUMMARIZE, answer_mode, stages_of
from tinythinker.students import GenerationStopped, RowsStreamer, Student
from tinythinker.traces import read_traces, write_traces  # noqa: F401 - re-exported: callers import them here
from tinythinker.types import Question, Trace

# Token budgets per stage: ECQA recalls run to ~100 tokens, one option's explanation to ~40, and the answer
# (with the option's words) to ~25. A trained student stops at EOS well before these.
RECALL_TOKENS, ANALYZE_TOKENS, SUMMARIZE_TOKENS = 128, 64, 32


@dataclass
class StageSampling:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError(f"top_k must be >= 0 and max_new_tokens >= 1, got {self.top_k}, {self.max_new_tokens}")


@dataclass
class Sampling:
    recall: StageSampling = field(default_factory=lambda: StageSampling(max_new_tokens=RECALL_TOKENS))
    analyze: StageSampling = field(default_factory=lambda: StageSampling(max_new_tokens=ANALYZE_TOKENS))
    summarize: StageSampling = field(default_factory=lambda: StageSampling(max_new_tokens=SUMMARIZE_TOKENS))
    seed: int = 0

    def stage(self, name: str) -> StageSampling:
        return getattr(self, name)

    @property
    def is_greedy(self) -> bool:
        return not any(self.stage(s).do_sample for s in stages.STAGES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sampling:
        default = cls()
        kw: dict[str, Any] = {s: StageSampling(**d[s]) if s in d else default.stage(s) for s in stages.STAGES}
        return cls(**kw, seed=int(d.get("seed", 0)))

    @classmethod
    def sampled(cls, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                sample_stages: tuple[str, ...] = (RECALL, ANALYZE)) -> Sampling:
        """Sample the given stages, greedy elsewhere. The default samples Recall and Analyze and keeps
        Summarize greedy, as the paper's generate.py does when it samples for self-consistency and DPO."""
        base = cls(seed=seed)
        for s in sample_stages:
            if s not in stages.STAGES:
                raise ValueError(f"unknown stage {s!r}; choose from {', '.join(stages.STAGES)}")
            setattr(base, s, replace(base.stage(s), do_sample=True, temperature=temperature, top_k=top_k,
                                     top_p=top_p))
        return base


GREEDY = Sampling()
_STAGE_INDEX = {RECALL: 0, ANALYZE: 1, SUMMARIZE: 2}


@dataclass
class _Item:
    """One (question, sample) on its way through the stages."""

    question: Question
    sample_index: int = 0
    recall: str | None = None
    analyses: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def _seed(sampling: Sampling, batch_index: int, stage: str) -> int:
    return sampling.seed * 1_000_003 + batch_index * 3 + _STAGE_INDEX[stage]


def _streaming(streamer) -> dict:
    # Only a streamed call passes one: a student without streaming (a test's stand-in) is called as before.
    return {} if streamer is None else {"streamer": streamer}


def _generate(student: Student, inputs: list[str], sc: StageSampling, seed: int, streamer=None) -> list[str]:
    return student.generate(inputs, max_new_tokens=sc.max_new_tokens, do_sample=sc.do_sample,
                            temperature=sc.temperature, top_k=sc.top_k, top_p=sc.top_p, seed=seed,
                            **_streaming(streamer))


def _recall(student, items, stage_type, sc, seed, restrict_answer, streamer=None):
    inputs = [stages.recall_input(i.question) for i in items]
    for item, text in zip(items, _generate(student, inputs, sc, seed, streamer), strict=True):
        item.recall = text


def _analyze(student, items, stage_type, sc, seed, restrict_answer, streamer=None):
    # One group per question: its options' inputs share question + recall, encoded once (`generate_shared`).
    groups = [[stages.analyze_input(item.question, item.recall, label, stage_type) for label in item.question.labels]
              for item in items]
    outputs = student.generate_shared(groups, max_new_tokens=sc.max_new_tokens, do_sample=sc.do_sample,
                                      temperature=sc.temperature, top_k=sc.top_k, top_p=sc.top_p, seed=seed,
                                      **_streaming(streamer))
    for item, texts in zip(items, outputs, strict=True):
        item.analyses = dict(zip(item.question.labels, texts, strict=True))


# Questions whose Summarize inputs are encoded together in "score" mode (their candidates then expand the cache).
SCORE_BATCH = 16


def _score_choices(student: Student, inputs: list[str], choices: list[list[str]]) -> list[int]:
    picks: list[int] = []
    for start in range(0, len(inputs), SCORE_BATCH):
        rows = student.score_candidates(inputs[start:start + SCORE_BATCH], choices[start:start + SCORE_BATCH])
        picks += [max(range(len(r)), key=r.__getitem__) for r in rows]
    return picks


def _answer_formats(student: Student) -> tuple[str, ...] | None:
    # A student trained on one answer format is scored (or constrained) on it alone; a plain one on all of them.
    fmt = getattr(student, "answer_format", None)
    return (fmt,) if fmt else None


def _summarize(student, items, stage_type, sc, seed, restrict_answer, streamer=None):
    # Only free generation writes text token by token; the restricted modes pick a whole answer at once.
    inputs = [stages.summarize_input(i.question, i.recall, i.analyses, stage_type) for i in items]
    mode = answer_mode(restrict_answer)
    if mode == "free":
        outputs = _generate(student, inputs, sc, seed, streamer)
    else:
        choices = [stages.answer_choices(i.question, _answer_formats(student)) for i in items]
        if mode == "score":
            picks = _score_choices(student, inputs, choices)
        else:
            picks = student.generate_choice(inputs, choices, do_sample=sc.do_sample, temperature=sc.temperature,
                                            top_k=sc.top_k, top_p=sc.top_p, seed=seed)
        outputs = [c[p] for c, p in zip(choices, picks, strict=True)]
    for item, text in zip(items, outputs, strict=True):
        item.summary = text


_STAGE_FUNCS = {RECALL: _recall, ANALYZE: _analyze, SUMMARIZE: _summarize}


def _iter_stages(student: Student, items: list[_Item], stage_type: str, sampling: Sampling,
                 restrict_answer: bool | str, batch_index: int = 0, from_stage: str | None = None,
                 streamer_for: Callable[[str], Any] | None = None):
    """Run the stages from `from_stage` on, yielding each stage's name once its outputs are on the items.
    `streamer_for(stage)`, if given, makes the streamer each stage's generate call writes its tokens to."""
    todo = stages_of(stage_type)
    if from_stage is not None:
        todo = todo[todo.index(from_stage):]
    for stage in todo:
        start = time.perf_counter()
        _STAGE_FUNCS[stage](student, items, stage_type, sampling.stage(stage), _seed(sampling, batch_index, stage),
                            restrict_answer, streamer_for(stage) if streamer_for else None)
        # The batch's stage time shared out evenly: what one question cost in this run.
        per_item = (time.perf_counter() - start) / len(items)
        for item in items:
            item.timings[stage] = per_item
        yield stage


def _run_stages(student: Student, items: list[_Item], stage_type: str, sampling: Sampling, restrict_answer: bool | str,
                batch_index: int = 0, from_stage: str | None = None) -> None:
    for _ in _iter_stages(student, items, stage_type, sampling, restrict_answer, batch_index, from_stage):
        pass


def _trace(student: Student, item: _Item, stage_type: str, sampling: Sampling, restrict_answer: bool | str,
           num_samples: int) -> Trace:
    q = item.question
    predicted = stages.parse_answer(item.summary, q.labels)
    return Trace(
        question=q,
        recall=item.recall,
        analyses=dict(item.analyses),
        summary=item.summary,
        predicted=predicted,
        correct=None if q.answer is None else predicted == q.answer,
        stage_timings=dict(item.timings),
        sampling={**sampling.to_dict(), "sample_index": item.sample_index, "num_samples": num_samples,
                  "restrict_answer": restrict_answer},
        stage_type=stage_type,
        model=student.name,
    )


def _run_batched(student: Student, items: list[_Item], stage_type: str, sampling: Sampling, batch_size: int,
                 restrict_answer: bool | str, from_stage: str | None, on_progress, on_batch=None) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    answer_mode(restrict_answer)  # an unknown mode fails before any generation
    # Similar lengths in one batch waste less compute on padding; longest first so memory peaks at once.
    order = sorted(range(len(items)), key=lambda i: -len(stages.recall_input(items[i].question)))
    for b, start in enumerate(range(0, len(order), batch_size)):
        batch = [items[i] for i in order[start:start + batch_size]]
        _run_stages(student, batch, stage_type, sampling, restrict_answer, batch_index=b, from_stage=from_stage)
        if on_batch is not None:
            on_batch(batch)
        if on_progress is not None:
            on_progress(min(start + batch_size, len(items)), len(items))


def _saver(student, stage_type, sampling, restrict_answer, num_samples, on_traces):
    """`_run_batched`'s per-batch callback that hands `on_traces` the batch's finished traces."""
    if on_traces is None:
        return None
    return lambda batch: on_traces([_trace(student, item, stage_type, sampling, restrict_answer, num_samples)
                                    for item in batch])


def run_pipeline(student: Student, questions: list[Question], stage_type: str = stages.DEFAULT_STAGE_TYPE,
                 sampling: Sampling = GREEDY, batch_size: int = 16, num_samples: int = 1,
                 restrict_answer: bool | str = False,
                 on_progress: Callable[[int, int], None] | None = None,
                 on_traces: Callable[[list[Trace]], None] | None = None) -> list[Trace]:
    """Traces for every question (x num_samples, in question order then sample order).

    `on_progress(done, total)` is called after each batch with counts of (question, sample) items;
    `on_traces(traces)` with the batch's finished traces (batch order), so a long run can save as it goes.
    """
    stages_of(stage_type)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    items = [_Item(q, s) for q in questions for s in range(num_samples)]
    _run_batched(student, items, stage_type, sampling, batch_size, restrict_answer, None, on_progress,
                 _saver(student, stage_type, sampling, restrict_answer, num_samples, on_traces))
    return [_trace(student, item, stage_type, sampling, restrict_answer, num_samples) for item in items]


def complete_traces(student: Student, traces: list[Trace], from_stage: str,
                    stage_type: str = stages.DEFAULT_STAGE_TYPE, sampling: Sampling = GREEDY, batch_size: int = 16,
                    num_samples: int = 1, restrict_answer: bool | str = False,
                    on_progress: Callable[[int, int], None] | None = None,
                    on_traces: Callable[[list[Trace]], None] | None = None) -> list[Trace]:
    """`complete_trace` for many traces, batched like `run_pipeline`: each trace keeps its stages before
    `from_stage` (its `recall` / `analyses`) and gets `from_stage` and what follows generated, `num_samples`
    times (e.g. phase 2 sampling analyses for a chosen recall). `on_progress` / `on_traces` as in `run_pipeline`."""
    items = [_kept_item(t.question, t.recall, t.analyses, stage_type, from_stage, s)
             for t in traces for s in range(num_samples)]
    _run_batched(student, items, stage_type, sampling, batch_size, restrict_answer, from_stage, on_progress,
                 _saver(student, stage_type, sampling, restrict_answer, num_samples, on_traces))
    return [_trace(student, item, stage_type, sampling, restrict_answer, num_samples) for item in items]


# -- the step API (one question, one stage at a time; the app's editor) -------------------------------------

def run_stage(student: Student, question: Question, stage: str, recall: str | None = None,
              analyses: dict[str, str] | None = None, stage_type: str = stages.DEFAULT_STAGE_TYPE,
              sampling: Sampling = GREEDY, restrict_answer: bool | str = False) -> str | dict[str, str]:
    """Run one stage from the given (possibly edited) earlier stages: recall -> str, analyze -> {label: text},
    summarize -> str."""
    if stage not in stages_of(stage_type):
        raise ValueError(f"stage type {stage_type!r} has no {stage!r} stage")
    item = _Item(question, recall=recall, analyses=dict(analyses or {}))
    _STAGE_FUNCS[stage](student, [item], stage_type, sampling.stage(stage), _seed(sampling, 0, stage),
                        restrict_answer)
    return {RECALL: item.recall, ANALYZE: item.analyses, SUMMARIZE: item.summary}[stage]


def _kept_item(question: Question, recall: str | None, analyses: dict[str, str] | None, stage_type: str,
               from_stage: str, sample_index: int = 0) -> _Item:
    order = stages_of(stage_type)
    if from_stage not in order:
        raise ValueError(f"stage type {stage_type!r} has no {from_stage!r} stage to start from")
    kept = order[:order.index(from_stage)]
    if RECALL in kept and recall is None:
        raise ValueError(f"question {question.id!r}: starting at {from_stage!r} keeps the recall: it has none")
    if ANALYZE in kept:
        missing = [lab for lab in question.labels if lab not in (analyses or {})]
        if missing:
            raise ValueError(f"question {question.id!r}: starting at {from_stage!r} keeps the analyses: "
                             f"options {missing} have none")
    return _Item(question, sample_index, recall=recall if RECALL in kept else None,
                 analyses=dict(analyses or {}) if ANALYZE in kept else {})


def complete_trace(student: Student, question: Question, stage_type: str = stages.DEFAULT_STAGE_TYPE,
                   recall: str | None = None, analyses: dict[str, str] | None = None,
                   from_stage: str | None = None, sampling: Sampling = GREEDY,
                   restrict_answer: bool | str = False) -> Trace:
    """A Trace that keeps the given earlier stages and generates `from_stage` and every stage after it.

    After a user edits the recall, call with `recall=edited, from_stage="analyze"`; after editing an analysis,
    `analyses=edited, from_stage="summarize"`. `from_stage=None` runs every stage of the stage type.
    """
    *_, (_, trace) = iter_trace(student, question, stage_type, recall, analyses, from_stage, sampling,
                                restrict_answer)
    return trace


def iter_trace(student: Student, question: Question, stage_type: str = stages.DEFAULT_STAGE_TYPE,
               recall: str | None = None, analyses: dict[str, str] | None = None,
               from_stage: str | None = None, sampling: Sampling = GREEDY,
               restrict_answer: bool | str = False):
    """`complete_trace` one stage at a time: yields `(stage, trace so far)` after each stage it runs, so a caller
    can show Recall while Analyze runs. The last trace is `complete_trace`'s (the same calls, in the same order)."""
    from_stage = from_stage or stages_of(stage_type)[0]
    item = _kept_item(question, recall, analyses, stage_type, from_stage)
    for stage in _iter_stages(student, [item], stage_type, sampling, restrict_answer, from_stage=from_stage):
        yield stage, _trace(student, item, stage_type, sampling, restrict_answer, 1)


def stream_trace(student: Student, question: Question, stage_type: str = stages.DEFAULT_STAGE_TYPE,
                 recall: str | None = None, analyses: dict[str, str] | None = None,
                 from_stage: str | None = None, until: str | None = None, sampling: Sampling = GREEDY,
                 restrict_answer: bool | str = False, min_interval: float = 0.2):
    """`iter_trace` that also shows each stage while the student writes it: yields `(stage, trace, finished)`.

    `finished` False: `trace` holds the text of `stage` written so far (the Recall, or each option's analysis;
    Summarize too where it writes freely), at most once per `min_interval` seconds. `finished` True: the stage is
    done, and the trace is what `iter_trace` yields there (the same calls, so greedy outputs are the same).
    `until` stops after that stage (one Step-through stage alone). The student runs in a worker thread, since
    `generate` hands out its tokens from inside its loop. Closing the generator stops the worker: at the next
    token of a stage being written, or before the next stage starts (a restricted Summarize, which scores whole
    answers, is not interrupted once begun).
    """
    todo = stages_of(stage_type)
    from_stage = from_stage or todo[0]
    item = _kept_item(question, recall, analyses, stage_type, from_stage)  # checks from_stage first
    if until is not None and until not in todo:
        raise ValueError(f"stage type {stage_type!r} has no {until!r} stage to stop after")
    if until is not None and todo.index(until) < todo.index(from_stage):
        raise ValueError(f"cannot stop after {until!r}: the run starts at the later stage {from_stage!r}")
    events: queue.Queue = queue.Queue()
    # One event for the whole run, so that a reader who leaves between two stages stops the next one too.
    stop = threading.Event()

    def streamer_for(stage: str) -> RowsStreamer:
        if stop.is_set():  # called as the stage starts, before any of its work
            raise GenerationStopped("generation stopped: its reader went away")
        return RowsStreamer(student, lambda texts: events.put(("text", stage, texts)), stop)

    def work() -> None:
        try:
            for stage in _iter_stages(student, [item], stage_type, sampling, restrict_answer, from_stage=from_stage,
                                      streamer_for=streamer_for):
                events.put(("done", stage, _trace(student, item, stage_type, sampling, restrict_answer, 1)))
                if stage == until or stop.is_set():
                    break
        except GenerationStopped:
            pass
        except BaseException as exc:  # handed to the reader's thread, which raises it
            events.put(("error", exc, None))
        events.put(("end", None, None))

    def partial(base: Trace, stage: str, texts: list[str]) -> Trace:
        if stage == RECALL:
            return replace(base, recall=texts[0])
        if stage == ANALYZE:
            return replace(base, analyses=dict(zip(question.labels, texts, strict=True)))
        return replace(base, summary=texts[0])

    base = _trace(student, item, stage_type, sampling, restrict_answer, 1)  # the kept stages, before any runs
    worker = threading.Thread(target=work, name="stream_trace", daemon=True)
    worker.start()
    pending, shown_at = None, 0.0
    try:
        while True:
            wait = None if pending is None else max(0.0, shown_at + min_interval - time.perf_counter())
            try:
                kind, first, second = events.get(timeout=wait)
            except queue.Empty:  # the newest text has waited its interval: show it
                yield pending
                pending, shown_at = None, time.perf_counter()
                continue
            if kind == "text":
                pending = (first, partial(base, first, second), False)
                if time.perf_counter() - shown_at >= min_interval:
                    yield pending
                    pending, shown_at = None, time.perf_counter()
            elif kind == "done":
                base, pending = second, None
                yield first, second, True
                shown_at = time.perf_counter()
            elif kind == "error":
                raise first
            else:
                return
    finally:
        stop.set()  # the reader is gone (or done): the worker stops at its next token or stage


# -- results ------------------------------------------------------------------------------------------------

def self_consistency(traces: list[Trace]) -> dict[str, str | None]:
    """Majority letter per question id over its samples.

    Unlike the paper's script, invalid answers (None) cast no vote: an unreadable answer is not evidence for any
    option. Ties go to the letter reached first in sample order; a question with no valid answer maps to None.
    """
    votes: dict[str, Counter] = {}
    for t in traces:
        c = votes.setdefault(t.question.id, Counter())
        if t.predicted is not None:
            c[t.predicted] += 1
    return {qid: (c.most_common(1)[0][0] if c else None) for qid, c in votes.items()}


def accuracy(traces: list[Trace]) -> dict[str, Any]:
    """`accuracy` over traces with a known answer, `invalid_rate` over all traces, `n` traces; with several
    samples per question also `questions` and `self_consistency_accuracy`."""
    labelled = [t for t in traces if t.question.answer is not None]
    letters = Counter(t.predicted for t in traces if t.predicted is not None)
    out: dict[str, Any] = {
        "accuracy": sum(bool(t.correct) for t in labelled) / len(labelled) if labelled else 0.0,
        "invalid_rate": sum(t.predicted is None for t in traces) / len(traces) if traces else 0.0,
        "n": len(traces),
        # A student that learned only the format writes one letter for every question (share near 1).
        "top_answer_share": max(letters.values()) / len(traces) if letters else 0.0,
    }
    answers = {t.question.id: t.question.answer for t in labelled}
    if len(answers) < len(labelled):
        votes = self_consistency(labelled)
        out["questions"] = len(answers)
        out["self_consistency_accuracy"] = sum(votes[q] == a for q, a in answers.items()) / len(answers)
    return out
