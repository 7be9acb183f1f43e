"""Compare: two checkpoints on one question stage by stage (differences highlighted), and over a whole split
(flip table with filters and a chart) from traces cached on disk."""

from __future__ import annotations

import gradio as gr

from demo.widgets import SPLITS, friendly, pick_question, question_markdown, question_picker, verdict_markdown
from tinythinker import plots
from tinythinker.compare import FLIP_KINDS, cache_path, cached_traces, disagreements, flip_counts, word_diff
from tinythinker.jobs import BENCHMARKS
from tinythinker.stages import analyses_text

ALL = "all disagreements"
TABLE_HEADERS = ["id", "kind", "answer", "a", "b", "same answer", "question"]
DIFF_COLOURS = {"-": "#ffcdd2", "+": "#c8e6c9"}


def _check_pair(a, b):
    if not a or not b:
        raise ValueError("pick two checkpoints (A and B)")


def one_question(ctx, a, b, *question_inputs):
    """Both models, greedy, on one question: per stage the A and B texts with their differing words marked."""
    from tinythinker.pipeline import run_pipeline  # torch: loaded after start-up (app.warm_up)

    _check_pair(a, b)
    q = pick_question(ctx, *question_inputs)
    ta = run_pipeline(ctx.student(a), [q])[0]
    tb = run_pipeline(ctx.student(b), [q])[0]
    texts = [(ta.recall or "", tb.recall or ""),
             (analyses_text(q.labels, ta.analyses) if ta.analyses else "",
              analyses_text(q.labels, tb.analyses) if tb.analyses else ""),
             (ta.summary, tb.summary)]
    out = [question_markdown(q)]
    for left, right in texts:
        out.extend(word_diff(left, right))
    out += [verdict_markdown(ta), verdict_markdown(tb)]
    return tuple(out)


def split_traces(ctx, a, b, benchmark, split, limit, progress=None):
    _check_pair(a, b)
    questions = ctx.questions(benchmark, split)
    limit = int(limit or 0)
    if limit > 0:
        questions = questions[:limit]
    out = []
    for name in (a, b):
        path = ctx.checkpoint_path(name)
        cache = cache_path(path, ctx.ws.runs_dir, benchmark, split, questions)
        on_progress = None
        if progress is not None:
            def on_progress(done, total, _name=name):
                progress(done / max(total, 1), desc=f"running {_name} on {benchmark} {split}")
        out.append(cached_traces(ctx.students.get, path, questions, cache, on_progress=on_progress))
    return out


def over_split(ctx, a, b, benchmark, split, limit, kind, progress=None):
    """The disagreement table (filtered by flip kind), the flips chart and a one-line summary."""
    ta, tb = split_traces(ctx, a, b, benchmark, split, limit, progress)
    kinds = FLIP_KINDS if kind in (None, "", ALL) else (kind,)
    rows = disagreements(ta, tb, kinds)
    counts = flip_counts(ta, tb)
    n = sum(counts.values())
    acc_a = sum(t.correct is True for t in ta) / max(len(ta), 1)
    acc_b = sum(t.correct is True for t in tb) / max(len(tb), 1)
    summary = (f"{n} questions · A {acc_a:.1%} · B {acc_b:.1%} · " +
               " · ".join(f"{k}: {v}" for k, v in counts.items()) + f" · showing {len(rows)}")
    table = [[r[h] for h in TABLE_HEADERS] for r in rows]
    return summary, table, plots.flips(counts, a, b)


def build(ctx) -> None:
    default_a, default_b = ctx.default_pair()
    choices = ctx.checkpoint_choices()
    with gr.Row():
        a = gr.Dropdown(choices, value=default_a, allow_custom_value=True, label="A (default: latest phase-1 model)",
                        elem_id="compare-a")
        b = gr.Dropdown(choices, value=default_b, allow_custom_value=True,
                        label="B (default: latest self-reflected model)", elem_id="compare-b")
        refresh = gr.Button("↻", scale=0, min_width=40)
    with gr.Tab("one question"):
        picker = question_picker(prefix="compare-")
        go = gr.Button("Compare on this question", variant="primary", elem_id="compare-one")
        question = gr.Markdown()
        diffs = []
        for stage in ("Recall", "Analyze", "Summarize"):
            with gr.Row():
                diffs.append(gr.HighlightedText(label=f"{stage} · A", color_map=DIFF_COLOURS, show_legend=False))
                diffs.append(gr.HighlightedText(label=f"{stage} · B", color_map=DIFF_COLOURS, show_legend=False))
        with gr.Row():
            verdict_a, verdict_b = gr.Markdown(), gr.Markdown()
    with gr.Tab("whole split"):
        gr.Markdown("Traces are computed once per (checkpoint, split) and cached as JSONL in the run folder.")
        with gr.Row():
            benchmark = gr.Dropdown(list(BENCHMARKS), value="csqa", label="benchmark")
            split = gr.Dropdown(list(SPLITS), value="validation", label="split")
            limit = gr.Number(0, precision=0, minimum=0, label="first N questions (0 = all)", elem_id="compare-limit")
        kind = gr.Radio([ALL, *FLIP_KINDS], value=ALL, label="show", elem_id="compare-filter")
        run_split = gr.Button("Compare over the split", variant="primary", elem_id="compare-run-split")
        summary = gr.Markdown(elem_id="compare-summary")
        chart = gr.Plot()
        table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, elem_id="compare-table")

    # Events, all in one place.
    refresh.click(lambda: (gr.update(choices=ctx.checkpoint_choices()),) * 2, None, [a, b], api_visibility="private")
    go.click(friendly(lambda *x: one_question(ctx, *x)), [a, b, *picker.inputs],
             [question, *diffs, verdict_a, verdict_b], api_name="compare_question", concurrency_id="model",
             concurrency_limit=1)

    # gradio injects a progress tracker into a parameter whose default is gr.Progress().
    def split_fn(a_, b_, bench, spl, lim, k, progress=gr.Progress()):  # noqa: B008
        return friendly(over_split)(ctx, a_, b_, bench, spl, lim, k, progress)

    inputs = [a, b, benchmark, split, limit, kind]
    run_split.click(split_fn, inputs, [summary, table, chart], api_name="compare_split", concurrency_id="model",
                    concurrency_limit=1)
    kind.change(split_fn, inputs, [summary, table, chart], api_visibility="private")
