"""Explore: browse a benchmark split, each question with its teacher rationales in the three stage formats."""

from __future__ import annotations

import gradio as gr

from demo.widgets import SPLITS, friendly, question_markdown, stage_type_dropdown
from tinythinker import stages
from tinythinker.data import DataError
from tinythinker.jobs import BENCHMARKS
from tinythinker.types import Question, Rationale
from tinythinker.workspace import DATA

USER_FILE = "my JSONL file"


def _block(title: str, source: str, target: str) -> str:
    return f"**{title}**\n\n```text\n{source}\n```\n→ `{target}`\n"


def render_rationale(q: Question, r: Rationale, stage_type: str, number: int) -> str:
    """One teacher rationale as the (input -> target) pairs phase 1 trains on, formatted by stages.py."""
    parts = [f"#### Rationale {number} <sub>{r.source}</sub>"]
    try:
        if stages.uses(stage_type, stages.RECALL):
            parts.append(_block("Recall", stages.recall_input(q), r.recall or "(no recall in this rationale)"))
        if stages.uses(stage_type, stages.ANALYZE):
            for o in q.options:
                target = r.analyses.get(o.label)
                parts.append(_block(f"Analyze option {o.label}", stages.analyze_input(q, r.recall, o.label, stage_type),
                                    target or "(no analysis for this option)"))
        if q.answer is not None:
            parts.append(_block("Summarize", stages.summarize_input(q, r.recall, r.analyses, stage_type),
                                stages.summarize_target(q.answer)))
    except ValueError as e:  # e.g. a rationale without a recall under a stage type that needs one
        parts.append(f"_cannot render for {stage_type}: {e}_")
    return "\n".join(parts)


def show(ctx, benchmark, split, index, path, stage_type):
    if benchmark == USER_FILE:
        if not (path or "").strip():  # nothing typed yet: say what to do, not "empty path"
            return ("Type the path of your JSONL file (inside the data or runs folder) above and press Enter.",
                    "", "", gr.skip())
        resolved = ctx.ws.resolve(path, DATA, field="data file")
        examples = ctx.user_examples(resolved, split)
    else:
        try:
            examples = ctx.examples(benchmark, split)
        except DataError:
            return _cached_only(ctx, benchmark, split, index, stage_type)
    if not examples:
        raise ValueError(f"{benchmark} {split} has no questions")
    i = _clamp(index, len(examples))
    q, rationales = examples[i]
    body = "\n\n".join(render_rationale(q, r, stage_type, n) for n, r in enumerate(rationales, 1))
    header = f"Question {i} of {len(examples)} ({benchmark} {split}) · {len(rationales)} teacher rationale(s)"
    return header, question_markdown(q), body or "_no teacher rationale for this question_", i


def _clamp(index, n: int) -> int:
    """A typed question # kept inside 0..n-1 (Explore browses; it never refuses an index)."""
    return min(max(int(index or 0), 0), n - 1)


def _cached_only(ctx, benchmark, split, index, stage_type):
    """Without benchmark data (a first start offline), the questions cached with the shipped students can still
    be browsed, with their stage inputs; the teacher rationales live only in the data, so say where to point."""
    questions = ctx.questions(benchmark, split)  # re-raises the data error when nothing is cached either
    i = _clamp(index, len(questions))
    q = questions[i]
    header = (f"Question {i} of {len(questions)} cached ({benchmark} {split}) · no teacher rationales: "
              f"{ctx.questions_note(benchmark, split)}")
    body = _block("Recall input (what the student is asked first)", stages.recall_input(q), "(the student writes it)")
    return header, question_markdown(q), body, i


def build(ctx):
    gr.Markdown("Browse a benchmark with its teacher rationales, rendered exactly as the student sees them.")
    with gr.Row():
        benchmark = gr.Dropdown([*BENCHMARKS, USER_FILE], value="csqa", label="benchmark", elem_id="explore-benchmark")
        split = gr.Dropdown(list(SPLITS), value="validation", label="split", elem_id="explore-split")
        stage_type = stage_type_dropdown(elem_id="explore-stage-type")
    path = gr.Textbox(label="JSONL file (inside the data or runs folder)", visible=False, elem_id="explore-path")
    with gr.Row():
        prev = gr.Button("◀ previous", size="sm")
        index = gr.Number(0, precision=0, minimum=0, label="question #", elem_id="explore-index")
        nxt = gr.Button("next ▶", size="sm")
    header = gr.Markdown(elem_id="explore-header")
    question = gr.Markdown(elem_id="explore-question")
    rationales = gr.Markdown(elem_id="explore-rationales")

    # Events, all in one place. Errors go to the header line (output 0), once.
    benchmark.change(lambda b: gr.update(visible=b == USER_FILE), benchmark, path, api_visibility="private")
    fn = friendly(lambda *a: show(ctx, *a), 4, 0)
    inputs, outputs = [benchmark, split, index, path, stage_type], [header, question, rationales, index]
    gr.on([benchmark.change, split.change, stage_type.change, index.change, path.submit], fn, inputs, outputs,
          api_name="explore", trigger_mode="always_last")
    # The arrows only move the index; its change event shows the question.
    prev.click(lambda i: max(int(i or 0) - 1, 0), index, index, api_visibility="private")
    nxt.click(lambda i: int(i or 0) + 1, index, index, api_visibility="private")
    return [(fn, inputs, outputs)]  # the page-load event: the first question, not a blank tab
