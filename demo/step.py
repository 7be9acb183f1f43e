"""Step through: one question, Recall -> Analyze -> Summarize one click at a time (or all), edit any stage and
re-run only what follows."""

from __future__ import annotations

import contextlib
import functools

import gradio as gr

from demo.widgets import (
    ANALYSES_HEADERS,
    UNTRAINED_NOTE,
    analyses_rows,
    friendly,
    friendly_stream,
    make_sampling,
    pick_question,
    picked_markdown,
    question_picker,
    rows_analyses,
    sampling_controls,
    stage_type_dropdown,
    truncation_note,
    verdict_markdown,
)
from tinythinker.stages import ANALYZE, RECALL, SUMMARIZE, stages_of

ACTIONS = ("recall", "analyze", "summarize", "all", "after_recall", "after_analyze")


def step(ctx, *args):
    """Run what `action` asks and return every output of the tab (question, recall, analyses, summary,
    verdict, per-stage seconds, model note): the last of what `step_stream` yields."""
    *_, last = step_stream(ctx, *args)
    return last


def step_stream(ctx, action, checkpoint, stage_type, source, benchmark, split, index, stem, options, answer,
                do_sample, temperature, top_k, top_p, max_new_tokens, seed, restrict, recall, analyses_table,
                timings):
    """`step`, yielding the tab's outputs as the student writes: each stage's text grows token by token (a few
    updates a second) and shows whole once the stage is done, so with "all" the Recall is read while Analyze
    runs (a stage takes a second or more on a CPU, the three together several)."""
    from tinythinker.pipeline import stream_trace  # torch: loaded after start-up (app.warm_up)

    q = pick_question(ctx, source, benchmark, split, index, stem, options, answer)
    shown = picked_markdown(ctx, q, source, benchmark, split)
    sampling = make_sampling(do_sample, temperature, top_k, top_p, max_new_tokens, seed)
    student = ctx.student(checkpoint)
    stages = stages_of(stage_type)
    timings = dict(timings or {})
    recall = (recall or "").strip() or None
    analyses = rows_analyses(analyses_table)
    base_note = model_note(ctx, checkpoint)

    def note_for(recall_text=None, analyses_dict=None):
        cut = truncation_note(student, q, stage_type, recall_text, analyses_dict)
        return base_note + (f"\n\n{cut}" if cut else "")

    def needs(stage):
        if stage not in stages:
            raise ValueError(f"stage type {stage_type!r} has no {stage.capitalize()} stage")

    until = None
    if action in (RECALL, ANALYZE, SUMMARIZE):
        needs(action)
        if action == ANALYZE and RECALL in stages and not recall:
            raise ValueError("Analyze needs a Recall text: run Recall first or type one")
        if action == SUMMARIZE and RECALL in stages and not recall:
            raise ValueError("Summarize needs a Recall text: run Recall first or type one")
        if action == SUMMARIZE and ANALYZE in stages and not any(analyses.values()):
            raise ValueError("Summarize needs the analyses: run Analyze first or type them")
        # One stage alone: what followed it before is stale, and is shown empty.
        from_stage = until = action
    elif action == "all":
        from_stage = stages[0]
    elif action == "after_recall":
        needs(RECALL)
        if not recall:
            raise ValueError("type or run a Recall text first")
        from_stage = stages[stages.index(RECALL) + 1]
    elif action == "after_analyze":
        needs(ANALYZE)
        if not any(analyses.values()):
            raise ValueError("type or run the analyses first")
        from_stage = SUMMARIZE
    else:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    kept_stages = stages[:stages.index(from_stage)]
    recall = recall if RECALL in kept_stages else None
    analyses = analyses if ANALYZE in kept_stages else None
    kept = {k: v for k, v in timings.items() if k in kept_stages}
    note = note_for(recall, analyses)
    # Closed explicitly: when gradio drops this stream (the reader left), the worker must stop now, not whenever
    # the garbage collector gets to the inner generator.
    events = contextlib.closing(stream_trace(student, q, stage_type, recall=recall, analyses=analyses,
                                             from_stage=from_stage, until=until, sampling=sampling,
                                             restrict_answer=restrict or "free"))
    with events as stream:
        for done, trace, finished in stream:
            timings = {**kept, **{k: round(v, 4) for k, v in trace.stage_timings.items()}}
            if finished:  # the truncation note reads the stage inputs: once per stage, not per token
                note = note_for(trace.recall, trace.analyses)
            # Until Summarize is done the trace's later stages are empty (or being written), with no verdict yet.
            verdict = verdict_markdown(trace) if finished and done == SUMMARIZE else ""
            yield (shown, trace.recall or "", analyses_rows(q, trace.analyses), trace.summary, verdict, timings,
                   note)


def model_note(ctx, checkpoint) -> str:
    """What the note above the question says about the model: untrained, or how it is run."""
    if ctx.is_untrained(checkpoint):
        return UNTRAINED_NOTE
    settings = ctx.settings(checkpoint)
    weights = (" · int8 weights (`app.py --int8`): answers often differ from the fp32 model's cached traces"
               if ctx.students.int8 else "")
    return (f"model: `{ctx.label(checkpoint)}` · trained as {settings['stage_type']}, answers "
            f"{settings['restrict_answer']} (set below from its run; change them to try another way){weights}")


def model_settings(ctx, checkpoint):
    """When the checkpoint changes: its stage type and answer mode (what it was trained with) and the note."""
    if not checkpoint:
        return gr.skip(), gr.skip(), ""
    settings = ctx.settings(checkpoint)
    return settings["stage_type"], settings["restrict_answer"], model_note(ctx, checkpoint)


def show_question(ctx, source, benchmark, split, index, stem, options, answer):
    q = pick_question(ctx, source, benchmark, split, index, stem, options, answer)
    return picked_markdown(ctx, q, source, benchmark, split), "", analyses_rows(q, None), "", "", {}, gr.skip()


def refresh(ctx, current):
    """Fresh choices (after a job ended, on page load); a missing or untrained pick moves to the best default."""
    choices = ctx.checkpoint_choices()
    values = [v for _, v in choices]
    keep = current in values and not (ctx.is_untrained(current) and ctx.default_checkpoint() != current)
    return gr.update(choices=choices, value=current if keep else ctx.default_checkpoint())


def build(ctx):
    """Returns (refresh fn, its input, its output) for the app's list refresh, and the page-load events."""
    gr.Markdown("Run the student one stage at a time. Edit a stage's text, then re-run only what follows it.")
    first = ctx.default_checkpoint()
    first_settings = ctx.settings(first)
    with gr.Row():
        checkpoint = gr.Dropdown(ctx.checkpoint_choices(), value=first, allow_custom_value=True,
                                 label="checkpoint (a folder in runs/, a shipped student, the untrained default, or "
                                       "a hub id)", elem_id="step-checkpoint", scale=3)
        b_refresh = gr.Button("↻", scale=0, min_width=40)
        stage_type = stage_type_dropdown(first_settings["stage_type"], elem_id="step-stage-type")
    note = gr.Markdown(elem_id="step-note")
    picker = question_picker(prefix="step-")
    sampling = sampling_controls(first_settings["restrict_answer"])
    question = gr.Markdown(elem_id="step-question")
    with gr.Row():
        b_recall = gr.Button("1 · Recall", elem_id="step-recall")
        b_analyze = gr.Button("2 · Analyze", elem_id="step-analyze")
        b_summarize = gr.Button("3 · Summarize", elem_id="step-summarize")
        b_all = gr.Button("Run all stages", variant="primary", elem_id="step-all")
    recall = gr.Textbox(label="Recall (editable)", lines=3, elem_id="step-recall-text")
    b_after_recall = gr.Button("Re-run what follows this Recall", size="sm", elem_id="step-after-recall")
    analyses = gr.Dataframe(headers=ANALYSES_HEADERS, column_count=(3, "fixed"), type="array", interactive=True,
                            wrap=True, label="Analyze (edit the analysis column)", elem_id="step-analyses")
    b_after_analyze = gr.Button("Re-run Summarize from these analyses", size="sm", elem_id="step-after-analyze")
    summary = gr.Textbox(label="Summarize", interactive=False, elem_id="step-summary")
    verdict = gr.Markdown(elem_id="step-verdict")
    timings = gr.JSON(label="seconds per stage", elem_id="step-timings")

    # Events, all in one place. Errors go to the note above the question (output 6), once.
    refresh_fn = (lambda c: refresh(ctx, c)), checkpoint, checkpoint
    b_refresh.click(*refresh_fn, api_visibility="private")
    checkpoint.change(friendly(lambda c: model_settings(ctx, c), 3, 2), checkpoint,
                      [stage_type, sampling.restrict, note], api_name="step_model")
    inputs = [checkpoint, stage_type, *picker.inputs, *sampling.inputs, recall, analyses, timings]
    outputs = [question, recall, analyses, summary, verdict, timings, note]
    for button, action in ((b_recall, "recall"), (b_analyze, "analyze"), (b_summarize, "summarize"),
                           (b_all, "all"), (b_after_recall, "after_recall"), (b_after_analyze, "after_analyze")):
        button.click(friendly_stream(functools.partial(step_stream, ctx, action), 7, 6), inputs, outputs,
                     api_name=f"step_{action}", concurrency_id="model", concurrency_limit=1)
    show = friendly(lambda *a: show_question(ctx, *a), 7, 6)
    gr.on([picker.index.submit, picker.benchmark.change, picker.split.change, picker.index.change], show,
          picker.inputs, outputs, api_visibility="private", trigger_mode="always_last")
    # On page load: the first question, and the current model's settings.
    on_load = [(show, picker.inputs, outputs),
               (friendly(lambda c: model_settings(ctx, c), 3, 2), checkpoint, [stage_type, sampling.restrict, note])]
    return refresh_fn, on_load
