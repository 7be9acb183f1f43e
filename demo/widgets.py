"""Pieces several tabs share: the question picker, sampling controls, error display, trace rendering."""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr

from tinythinker.jobs import BENCHMARKS
from tinythinker.stages import ANSWER_MODES, STAGE_TYPES, STAGES
from tinythinker.types import Option, Question, Trace

if TYPE_CHECKING:
    from tinythinker.pipeline import Sampling

log = logging.getLogger(__name__)

SPLITS = ("validation", "train", "test")
BENCHMARK, CUSTOM = "benchmark", "my own question"
ANALYSES_HEADERS = ["option", "text", "analysis"]


def error_text(e: BaseException) -> str:
    """A library error as the one line the tab's message area shows."""
    message = str(e).strip().strip("'\"") or type(e).__name__
    return f"**Error:** {message}"


EXPECTED = (ValueError, KeyError, FileNotFoundError, RuntimeError, OSError, gr.Error)


def friendly(fn, outputs: int | None = None, status: int = 0, as_json: bool = False):
    """Errors are shown once and leave the form usable: no error badge over every output (which hid the form and
    blocked clicks), every output left as it was. With `outputs` (how many the event has), the message goes to
    output number `status`, the tab's message area; without, it is one warning toast. Library errors are written
    for people; anything unexpected is also logged with its traceback. `as_json`: the message area is a gr.JSON,
    which gets {"error": message}."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - every error ends as one message, none as a stack trace
            return _error_outputs(e, fn, outputs, status, as_json)

    return wrapper


def friendly_stream(fn, outputs: int, status: int = 0):
    """`friendly` for a generator handler (its outputs shown as they come): an error, before or after the first
    yield, ends the stream with one message in output `status`; what was already shown stays."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - as in `friendly`
            yield _error_outputs(e, fn, outputs, status, False)

    return wrapper


def _error_outputs(e: Exception, fn, outputs: int | None, status: int, as_json: bool):
    if not isinstance(e, EXPECTED):
        log.exception("unexpected error in %s", getattr(fn, "__name__", "a handler"), exc_info=e)
    if outputs is None:
        gr.Warning(error_text(e).removeprefix("**Error:** "), duration=12)
        return gr.skip()
    text = {"error": error_text(e).removeprefix("**Error:** ")} if as_json else error_text(e)
    if outputs == 1:
        return text
    out = [gr.skip()] * outputs
    out[status] = text
    return tuple(out)


@dataclass
class QuestionPicker:
    source: gr.Radio
    benchmark: gr.Dropdown
    split: gr.Dropdown
    index: gr.Number
    stem: gr.Textbox
    options: gr.Textbox
    answer: gr.Textbox

    @property
    def inputs(self) -> list:
        return [self.source, self.benchmark, self.split, self.index, self.stem, self.options, self.answer]


def question_picker(custom: bool = True, prefix: str = "") -> QuestionPicker:
    source = gr.Radio([BENCHMARK, CUSTOM] if custom else [BENCHMARK], value=BENCHMARK, label="question from",
                      visible=custom, elem_id=f"{prefix}source")
    with gr.Row():
        benchmark = gr.Dropdown(list(BENCHMARKS), value="csqa", label="benchmark", elem_id=f"{prefix}benchmark")
        split = gr.Dropdown(list(SPLITS), value="validation", label="split", elem_id=f"{prefix}split")
        index = gr.Number(value=0, precision=0, minimum=0, label="question #", elem_id=f"{prefix}index")
    with gr.Group(visible=False) as own:
        stem = gr.Textbox(label="question", lines=2, elem_id=f"{prefix}stem")
        options = gr.Textbox(label="options, one per line (lettered A, B, ... in order)", lines=4,
                             elem_id=f"{prefix}options")
        answer = gr.Textbox(label="correct letter (optional)", max_lines=1, elem_id=f"{prefix}answer")
    source.change(lambda s: (gr.update(visible=s == CUSTOM)), source, own, api_visibility="private")
    return QuestionPicker(source, benchmark, split, index, stem, options, answer)


def pick_question(ctx, source, benchmark, split, index, stem, options, answer) -> Question:
    if source == CUSTOM:
        return custom_question(stem, options, answer)
    return ctx.question(benchmark, split, int(index or 0))


def picked_markdown(ctx, q: Question, source, benchmark, split) -> str:
    """A picked question as the tab shows it, with a line under it when it is one of the shipped students' cached
    questions (no benchmark data here)."""
    note = "" if source == CUSTOM else ctx.questions_note(benchmark, split)
    return question_markdown(q) + (f"\n\n> {note}" if note else "")


def custom_question(stem: str, options: str, answer: str | None = None) -> Question:
    stem = (stem or "").strip()
    texts = [line.strip() for line in (options or "").splitlines() if line.strip()]
    if not stem:
        raise ValueError("question: type a question")
    if not 2 <= len(texts) <= 26:
        raise ValueError(f"options: need 2 to 26 options, one per line (got {len(texts)})")
    labels = [chr(ord("A") + i) for i in range(len(texts))]
    answer = (answer or "").strip().upper() or None
    if answer is not None and answer not in labels:
        raise ValueError(f"correct letter: {answer!r} is not one of {', '.join(labels)}")
    digest = hashlib.sha1((stem + "\n" + "\n".join(texts)).encode()).hexdigest()[:12]
    return Question(id=f"custom-{digest}", stem=stem, options=[Option(lab, t) for lab, t in zip(labels, texts, strict=True)],
                    answer=answer, source="custom")


def question_markdown(q: Question) -> str:
    opts = "\n".join(f"- **({o.label})** {o.text}" + ("  (answer)" if o.label == q.answer else "") for o in q.options)
    return f"**{q.stem}**\n\n{opts}\n\n<sub>id {q.id} · {q.source}</sub>"


def stage_type_dropdown(value: str = "recall_analyze_summarize", elem_id: str | None = None) -> gr.Dropdown:
    return gr.Dropdown(list(STAGE_TYPES), value=value, label="stage type", elem_id=elem_id)


@dataclass
class SamplingControls:
    do_sample: gr.Checkbox
    temperature: gr.Slider
    top_k: gr.Number
    top_p: gr.Slider
    max_new_tokens: gr.Number
    seed: gr.Number
    restrict: gr.Radio

    @property
    def inputs(self) -> list:
        return [self.do_sample, self.temperature, self.top_k, self.top_p, self.max_new_tokens, self.seed,
                self.restrict]


def answer_mode_radio(value: str = "free", elem_id: str | None = None) -> gr.Radio:
    return gr.Radio(list(ANSWER_MODES), value=value, elem_id=elem_id,
                    label="Summarize answer: free (the paper) · constrain (only an option's answer) · "
                          "score (the option whose answer is likeliest)")


def sampling_controls(restrict: str = "free") -> SamplingControls:
    # The answer mode stays in view: it follows the model's run, and a hidden one is how a checkpoint came to
    # read 0% here against its 16.7% in Results.
    restrict = answer_mode_radio(restrict, elem_id="step-restrict")
    with gr.Accordion("sampling", open=False):
        with gr.Row():
            do_sample = gr.Checkbox(False, label="sample (off = greedy)")
            temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="temperature")
            top_k = gr.Number(0, precision=0, minimum=0, label="top-k (0 = off)")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
            max_new_tokens = gr.Number(0, precision=0, minimum=0, maximum=512,
                                       label="max new tokens (0 = each stage's default)")
            seed = gr.Number(0, precision=0, minimum=0, label="seed")
    return SamplingControls(do_sample, temperature, top_k, top_p, max_new_tokens, seed, restrict)


def make_sampling(do_sample, temperature, top_k, top_p, max_new_tokens, seed=0) -> Sampling:
    """One decoding setting for every stage, on top of the library's per-stage token budgets (kept when
    max new tokens is 0). Greedy with the defaults is exactly the library's GREEDY."""
    from tinythinker.pipeline import Sampling, StageSampling  # torch: loaded after start-up (see app.warm_up)

    tokens = int(max_new_tokens or 0)
    if not 0 <= tokens <= 512:
        raise ValueError(f"max new tokens: {tokens} is outside 0..512")
    base = Sampling(seed=int(seed or 0))
    per_stage = {}
    for name in STAGES:
        default = base.stage(name)
        per_stage[name] = StageSampling(do_sample=bool(do_sample), temperature=float(temperature),
                                        top_k=int(top_k or 0), top_p=float(top_p),
                                        max_new_tokens=tokens or default.max_new_tokens)
    return Sampling(**per_stage, seed=int(seed or 0))


def analyses_rows(q: Question, analyses: dict[str, str] | None) -> list[list[str]]:
    analyses = analyses or {}
    return [[o.label, o.text, analyses.get(o.label, "")] for o in q.options]


def rows_analyses(rows) -> dict[str, str]:
    """The analyses table (possibly edited in the browser) back to {label: analysis}."""
    if rows is None:
        return {}
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # a pandas frame
        rows = rows.values.tolist()
    if isinstance(rows, dict):  # what gradio_client sends: {"headers": [...], "data": [...]}
        rows = rows.get("data") or []
    return {str(r[0]).strip(): str(r[2] or "").strip() for r in rows if r and str(r[0]).strip()}


def verdict_markdown(trace: Trace) -> str:
    predicted = trace.predicted or "no valid answer"
    if trace.correct is None:
        return f"### Prediction: {predicted}"
    # Words, not emoji: Debian's Chromium (and many Linux desktops) has no emoji font and draws an empty box.
    mark = "right" if trace.correct else f"wrong (answer {trace.question.answer})"
    return f"### Prediction: {predicted} — {mark}"


UNTRAINED_NOTE = ("**Untrained model**: this is the default student before any training on the stage formats. "
                  "What it writes is not a result — train a run (Train tab) and pick its checkpoint.")


def truncation_note(student, q: Question, stage_type: str, recall: str | None = None,
                    analyses: dict[str, str] | None = None) -> str:
    """Say so when a stage input is longer than the student reads: the student cuts the middle of such an input
    (it keeps the question's head and the stage line), which must not happen without a word."""
    from tinythinker import stages

    budget = getattr(student, "max_source_length", None)
    tokenizer = getattr(student, "tokenizer", None)
    if not budget or tokenizer is None:
        return ""
    inputs = {}
    makers = {"Recall": lambda: stages.recall_input(q),
              "Analyze": lambda: stages.analyze_input(q, recall, q.labels[0], stage_type),
              "Summarize": lambda: stages.summarize_input(q, recall, analyses, stage_type)}
    for name, make in makers.items():
        if stages.uses(stage_type, name.lower()) and q.labels:
            try:
                inputs[name] = make()
            except (ValueError, KeyError, TypeError):
                pass
    long = []
    for name, text in inputs.items():
        n = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        if n > budget:
            long.append(f"{name} ({n:,} tokens)")
    if not long:
        return ""
    return (f"**Input truncated:** the student reads at most {budget:,} tokens; {', '.join(long)} "
            f"{'was' if len(long) == 1 else 'were'} cut in the middle (the start of the question and the stage "
            "line are kept). Shorten the question or its options for a faithful run.")


def no_training_data(problem: str) -> str:
    """What the first page and the Train tab say when the training data cannot be read (`ctx.data_problem()`)."""
    why = problem.splitlines()[0].split(" Without network access")[0][:400].rstrip(". ")
    return ("The app cannot read the CSQA training data here "
            f"({why}). Point it at the data and start it again: "
            "`python app.py --data-dir DIR` (or set `TINYTHINKER_DATA_DIR=DIR`), with DIR laid out as "
            "docs/DATA.md says; with network access the Hugging Face hub works too.")
