"""Compare: two checkpoints on one question stage by stage (differences highlighted), and over a whole split
(flip table with filters and a chart) from traces cached on disk."""

from __future__ import annotations

import gradio as gr

from demo.widgets import (
    CUSTOM,
    SPLITS,
    friendly,
    pick_question,
    picked_markdown,
    question_markdown,
    question_picker,
    verdict_markdown,
)
from tinythinker import plots
from tinythinker.compare import (
    FLIP_KINDS,
    SHOW_ALL,
    SHOWS,
    SLICES,
    cache_path,
    cached_traces,
    compare_report,
    compare_rows,
    curated_question_ids,
    disagreements,
    flip_counts,
    paired,
    report_markdown,
    word_diff,
    write_compared_traces,
)
from tinythinker.jobs import BENCHMARKS
from tinythinker.stages import analyses_text

ALL = "all disagreements"  # questions where A and B answer differently, or both wrong with different answers
FOLLOW = "each model's own"  # the answer mode (and stage type) each model was trained with
MODES = (FOLLOW, "free", "constrain", "score")
TABLE_HEADERS = ["id", "kind", "answer", "a", "b", "same answer", "question"]
DIFF_COLOURS = {"-": "#ffcdd2", "+": "#c8e6c9"}
SLICE_HEADERS = ["slice", "value", "n", "acc A", "acc B", "right->wrong", "wrong->right", "McNemar p"]
ROW_HEADERS = TABLE_HEADERS  # compare_rows has the same columns (both right included)


def _check_pair(a, b):
    if not a or not b:
        raise ValueError("pick two checkpoints (A and B)")


def run_settings(ctx, name, mode=FOLLOW) -> dict:
    """How `name` is run here: its own stage type, and its own answer mode unless the user picked another."""
    settings = ctx.settings(name)
    return {"stage_type": settings["stage_type"],
            "restrict_answer": settings["restrict_answer"] if mode in (None, "", FOLLOW) else mode}


def one_question(ctx, a, b, *question_inputs, mode=FOLLOW):
    """Both models, greedy, on one question: per stage the A and B texts with their differing words marked. A
    shipped model on one of its cached validation questions, run its own way, answers from its traces at once
    (the same texts greedy decoding gives: test_shipped_models checks that), instead of a minute of CPU."""
    _check_pair(a, b)
    q = pick_question(ctx, *question_inputs)
    shown = picked_markdown(ctx, q, *question_inputs[:3])
    (ta, cached_a), (tb, cached_b) = (_one_trace(ctx, name, q, *question_inputs[:3], mode) for name in (a, b))
    texts = [(ta.recall or "", tb.recall or ""),
             (analyses_text(q.labels, ta.analyses) if ta.analyses else "",
              analyses_text(q.labels, tb.analyses) if tb.analyses else ""),
             (ta.summary, tb.summary)]
    out = [shown]
    for left, right in texts:
        out.extend(word_diff(left, right))
    out += [f"**{side}** · {ctx.label(name)}{CACHED_MARK if cached else ''}\n\n" + verdict_markdown(t)
            for side, name, t, cached in (("A", a, ta, cached_a), ("B", b, tb, cached_b))]
    return tuple(out)


CACHED_MARK = " · from its cached traces"


def _one_trace(ctx, name, q, source, benchmark, split, mode):
    """(trace, whether it came from the shipped model's cached traces)."""
    from tinythinker.pipeline import run_pipeline  # torch: loaded after start-up (app.warm_up)

    settings = run_settings(ctx, name, mode)
    if source != CUSTOM:  # the cache matches by question id, which names the benchmark question
        cached = _shipped_cache(ctx, name, settings, split, [q])
        if cached is not None:
            return cached[0], True
    return run_pipeline(ctx.student(name), [q], **settings)[0], False


def _shipped_cache(ctx, name, settings, split, questions):
    """A shipped model's own validation traces, when they cover these questions run this way (no model run)."""
    from tinythinker.shipped import read_cached_traces

    model = ctx.shipped_model(name)
    if model is None or split != "validation" or not model.has_traces:
        return None
    if settings != {"stage_type": model.stage_type, "restrict_answer": model.restrict_answer}:
        return None
    by_id = {}
    for t in read_cached_traces(model):
        by_id.setdefault(t.question.id, t)
    if not all(q.id in by_id for q in questions):
        return None
    return [by_id[q.id] for q in questions]


def covered_questions(ctx, a, b) -> int:
    """For two shipped students: how many first validation questions both have cached traces for (so comparing
    them opens at once); 0 (all) otherwise."""
    from tinythinker.shipped import read_cached_traces

    models = [ctx.shipped_model(a) if a else None, ctx.shipped_model(b) if b else None]
    if not all(m is not None and m.has_traces for m in models):
        return 0
    try:
        return min(len(read_cached_traces(m)) for m in models)
    except (OSError, ValueError):
        return 0


def curated_filter(ctx, a, b) -> tuple[str, str, list[str]]:
    """(side, model, question ids) for "only questions whose curated pairs trained it": B when phase 2 trained it
    on curated pairs, else A (compare.curated_question_ids); ValueError saying why when neither was."""
    from tinythinker.store import Store

    _check_pair(a, b)
    why = []
    for side, name in (("B", b), ("A", a)):
        try:
            path = ctx.checkpoint_path(name)
            with Store(ctx.ws.db) as store:
                return side, name, curated_question_ids(path, store)
        except ValueError as e:  # LineageError, or a name that is no checkpoint here
            why.append(f"{side} ({ctx.label(name)}): {e}")
    raise ValueError("only a phase-2 model trained on curated pairs (Train, pairs curated or both) has questions "
                     "whose curated pairs trained it. " + " · ".join(why))


def split_traces(ctx, a, b, benchmark, split, limit, progress=None, mode=FOLLOW, only=None):
    """Both models' traces on the split's first `limit` questions; with `only` (question ids), on those of them
    only, taken before the limit (curated questions need not be among the split's first)."""
    from tinythinker.stages import DEFAULT_STAGE_TYPE

    _check_pair(a, b)
    questions = ctx.questions(benchmark, split)
    if only is not None:
        wanted = set(only)
        questions = [q for q in questions if q.id in wanted]
    limit = int(limit or 0)
    if limit > 0:
        questions = questions[:limit]
    out = []
    for side, name in (("A", a), ("B", b)):
        settings = run_settings(ctx, name, mode)
        shipped = _shipped_cache(ctx, name, settings, split, questions)
        if shipped is not None:
            out.append(shipped)
            continue
        path = ctx.checkpoint_path(name)
        variant = "" if settings == {"stage_type": DEFAULT_STAGE_TYPE, "restrict_answer": "free"} else \
            f"{settings['stage_type']}-{settings['restrict_answer']}"
        cache = cache_path(name if ctx.shipped_model(name) else path, ctx.ws.runs_dir, benchmark, split, questions,
                           variant)
        on_progress = None
        if progress is not None:
            # Before the first batch ends (loading the model takes a while) the bar already says what runs.
            progress(0.0, desc=f"{side}: {ctx.label(name)} on {benchmark} {split} (cached traces or a model run)")

            def on_progress(done, total, _side=side, _name=name):
                progress(done / max(total, 1), desc=f"{_side}: {ctx.label(_name)} · {done}/{total} questions")
        out.append(cached_traces(ctx.students.get, path, questions, cache, batch_size=4, on_progress=on_progress,
                                 **settings))
    return out


def over_split(ctx, a, b, benchmark, split, limit, kind, progress=None, mode=FOLLOW):
    """The disagreement table (filtered by flip kind), the flips chart and a one-line summary."""
    ta, tb = split_traces(ctx, a, b, benchmark, split, limit, progress, mode)
    kinds = FLIP_KINDS if kind in (None, "", ALL) else (kind,)
    rows = disagreements(ta, tb, kinds)
    if kind in (None, "", ALL):  # both wrong with the same answer is an agreement, not a disagreement
        rows = [r for r in rows if not r["same answer"]]
    counts = flip_counts(ta, tb)
    n = sum(counts.values())
    acc_a = sum(t.correct is True for t in ta) / max(len(ta), 1)
    acc_b = sum(t.correct is True for t in tb) / max(len(tb), 1)
    summary = (_cached_line(ctx, benchmark, split) + f"{n} questions · A {ctx.label(a)}: {acc_a:.1%} · B {ctx.label(b)}: {acc_b:.1%} · " +
               " · ".join(f"{k}: {v}" for k, v in counts.items()) + f" · showing {len(rows)}")
    table = [[r[h] for h in TABLE_HEADERS] for r in rows]
    return summary, table, plots.flips(counts, a, b)


def _cached_line(ctx, benchmark, split) -> str:
    """Over a split read from the shipped students' cached questions (no benchmark data): the line saying so."""
    note = ctx.questions_note(benchmark, split)
    return f"**Cached questions only** ({note})  \n" if note else ""


def _acc(value, ci) -> str:
    return "n/a" if value is None else f"{value:.1%} [{ci[0]:.0%}, {ci[1]:.0%}]"


def _curated_only(ctx, a, b, benchmark, split) -> tuple[list[str], str]:
    """The curated filter's question ids within this split, and the line the report opens with."""
    side, name, ids = curated_filter(ctx, a, b)
    present = {q.id for q in ctx.questions(benchmark, split)}
    shown = [i for i in ids if i in present]
    if not shown:
        listed = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
        raise ValueError(f"{side} ({ctx.label(name)}) was trained on curated pairs of {len(ids)} question(s) "
                         f"({listed or 'none with a question id'}), none of them in {benchmark} {split}: pick the "
                         "split their traces came from")
    return shown, (f"**only the {len(shown)} question(s) whose curated pairs trained {side}** "
                   f"({ctx.label(name)}; {len(ids) - len(shown)} more not in {benchmark} {split})  \n")


def split_report(ctx, a, b, benchmark, split, limit, show, search, slice_name, progress=None, curated=False):
    """compare.compare_report laid out: the summary (accuracies with intervals, McNemar), the slice table, flip
    rates by the chosen slice, the filtered question table and a JSONL file of both models' traces. `curated`:
    only the questions whose curated pairs trained B (or A), each with A's and B's answers: before and after."""
    import tempfile

    only, head = _curated_only(ctx, a, b, benchmark, split) if curated else (None, "")
    ta, tb = split_traces(ctx, a, b, benchmark, split, limit, progress, only=only)
    report = compare_report(ta, tb)
    slices = [[r["slice"], r["value"], r["n"], _acc(r["acc_a"], r["acc_a_ci"]), _acc(r["acc_b"], r["acc_b_ci"]),
               r["right->wrong"], r["wrong->right"], round(r["p_value"], 4)] for r in report["slices"]]
    rows = [[r[h] for h in ROW_HEADERS] for r in compare_rows(ta, tb, show or SHOW_ALL, search or "")]
    figure = plots.flip_rates_by_slice(report["slices"], slice_name or None, a, b)
    folder = tempfile.mkdtemp(prefix="tinythinker-compare-")
    download = write_compared_traces(f"{folder}/traces-{benchmark}-{split}.jsonl", ta, tb, a, b)
    text = _cached_line(ctx, benchmark, split) + head + report_markdown(report, a, b) + f"  \nshowing {len(rows)} question(s)"
    return text, slices, figure, rows, str(download)


def split_question(ctx, a, b, benchmark, split, limit, question_id, curated=False):
    """One question of the split side by side from the cached traces (no model run): per stage A's and B's
    texts with their differing words marked, and both verdicts."""
    only = _curated_only(ctx, a, b, benchmark, split)[0] if curated else None
    ta, tb = split_traces(ctx, a, b, benchmark, split, limit, only=only)
    question_id = str(question_id or "").strip()
    pair = next(((x, y) for x, y in paired(ta, tb) if x.question.id == question_id), None)
    if pair is None:
        raise ValueError(f"question id {question_id!r} is not among the compared questions (click a table row)")
    x, y = pair
    q = x.question
    out = [question_markdown(q)]
    for left, right in ((x.recall or "", y.recall or ""),
                        (analyses_text(q.labels, x.analyses) if x.analyses else "",
                         analyses_text(q.labels, y.analyses) if y.analyses else ""),
                        (x.summary, y.summary)):
        out.extend(word_diff(left, right))
    return (*out, verdict_markdown(x), verdict_markdown(y))


def refresh_pair(ctx, a, b, offered=None):
    """Fresh choices for A and B (page load, a job's end) and the default pair now offered. The picks are kept,
    but an empty or vanished one gets the default, and both do when the default has changed since `offered` (the
    pair last offered): a reflect job has ended, and its new model comes preselected against its parent."""
    choices = ctx.checkpoint_choices()
    values = {v for _, v in choices}
    da, db = ctx.default_pair()
    if offered is not None and list(offered) != [da, db]:
        a, b = da, db
    return (gr.update(choices=choices, value=a if a in values else da),
            gr.update(choices=choices, value=b if b in values else db), [da, db])


def build(ctx):
    """Returns (refresh fn, inputs, outputs) for the app's list refresh."""
    default_a, default_b = ctx.default_pair()
    choices = ctx.checkpoint_choices()
    with gr.Row():
        a = gr.Dropdown(choices, value=default_a, allow_custom_value=True, label="A (default: the phase-1 model B was reflected from)",
                        elem_id="compare-a")
        b = gr.Dropdown(choices, value=default_b, allow_custom_value=True,
                        label="B (default: your latest self-reflected run, else the best shipped one)", elem_id="compare-b")
        refresh = gr.Button("↻", scale=0, min_width=40)
    mode = gr.Radio(list(MODES), value=FOLLOW, elem_id="compare-mode",
                    label="Summarize answer: each model's own (what it was trained with, from its run), or the same "
                          "for both: free · constrain · score")
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
            limit = gr.Number(covered_questions(ctx, default_a, default_b), precision=0, minimum=0,
                              label="first N questions (0 = all; preset to what cached traces of a shipped pair "
                                    "cover)", elem_id="compare-limit")
        kind = gr.Radio([ALL, *FLIP_KINDS], value=ALL, label="show", elem_id="compare-filter")
        run_split = gr.Button("Compare over the split", variant="primary", elem_id="compare-run-split")
        summary = gr.Markdown(elem_id="compare-summary")
        chart = gr.Plot()
        table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, elem_id="compare-table")
        with gr.Accordion("report: accuracy with intervals, McNemar, slices, filters", open=True):
            with gr.Row():
                show = gr.Radio(list(SHOWS), value=SHOW_ALL, label="questions shown", elem_id="compare-show")
                search = gr.Textbox(label="search the question and every stage", max_lines=1,
                                    elem_id="compare-search")
                curated = gr.Checkbox(False, elem_id="compare-curated",
                                      label="only questions whose curated pairs trained B (a phase-2 run on "
                                            "curated or both pairs; A if only A is one)")
                slice_name = gr.Dropdown(list(SLICES), value="gold letter", label="chart: flip rates by",
                                         elem_id="compare-slice")
            run_report = gr.Button("Report over the split", elem_id="compare-run-report")
            report_md = gr.Markdown(elem_id="compare-report")
            slice_chart = gr.Plot()
            slice_table = gr.Dataframe(headers=SLICE_HEADERS, interactive=False, wrap=True,
                                       label="by slice", elem_id="compare-slices")
            rows_table = gr.Dataframe(headers=ROW_HEADERS, interactive=False, wrap=True,
                                      label="questions (click a row to see it side by side)",
                                      elem_id="compare-rows")
            download = gr.DownloadButton("Download both models' traces (JSONL)", elem_id="compare-download")
            with gr.Row():
                question_id = gr.Textbox(label="question id", max_lines=1, elem_id="compare-question-id")
                show_question = gr.Button("Side by side", elem_id="compare-show-question", scale=0)
            split_q = gr.Markdown()
            split_diffs = []
            for stage in ("Recall", "Analyze", "Summarize"):
                with gr.Row():
                    split_diffs.append(gr.HighlightedText(label=f"{stage} · A", color_map=DIFF_COLOURS,
                                                          show_legend=False))
                    split_diffs.append(gr.HighlightedText(label=f"{stage} · B", color_map=DIFF_COLOURS,
                                                          show_legend=False))
            with gr.Row():
                split_va, split_vb = gr.Markdown(), gr.Markdown()

    # Events, all in one place.
    offered = gr.State([default_a, default_b])
    refresh_fn = (lambda a_, b_, o_: refresh_pair(ctx, a_, b_, o_)), [a, b, offered], [a, b, offered]
    refresh.click(*refresh_fn, api_name="compare_refresh")
    go.click(friendly(lambda *x: one_question(ctx, *x[:-1], mode=x[-1]), 9, 0), [a, b, *picker.inputs, mode],
             [question, *diffs, verdict_a, verdict_b], api_name="compare_question", concurrency_id="model",
             concurrency_limit=1)

    # gradio injects a progress tracker into a parameter whose default is gr.Progress().
    def split_fn(a_, b_, bench, spl, lim, k, mode_=FOLLOW, progress=gr.Progress()):  # noqa: B008
        return friendly(over_split, 3, 0)(ctx, a_, b_, bench, spl, lim, k, progress, mode_)

    inputs = [a, b, benchmark, split, limit, kind, mode]
    run_split.click(split_fn, inputs, [summary, table, chart], api_name="compare_split", concurrency_id="model",
                    concurrency_limit=1)
    kind.change(split_fn, inputs, [summary, table, chart], api_visibility="private")

    def report_fn(a_, b_, bench, spl, lim, show_, search_, slice_, curated_=False,
                  progress=gr.Progress()):  # noqa: B008
        return friendly(split_report)(ctx, a_, b_, bench, spl, lim, show_, search_, slice_, progress, curated_)

    report_inputs = [a, b, benchmark, split, limit, show, search, slice_name, curated]
    report_outputs = [report_md, slice_table, slice_chart, rows_table, download]
    run_report.click(report_fn, report_inputs, report_outputs, api_name="compare_report", concurrency_id="model",
                     concurrency_limit=1)
    for control in (show, slice_name, curated):
        control.change(report_fn, report_inputs, report_outputs, api_visibility="private")
    search.submit(report_fn, report_inputs, report_outputs, api_visibility="private")
    question_inputs = [a, b, benchmark, split, limit, question_id, curated]
    question_outputs = [split_q, *split_diffs, split_va, split_vb]
    show_question.click(friendly(lambda *x: split_question(ctx, *x)), question_inputs, question_outputs,
                        api_name="compare_split_question")

    def pick_row(evt: gr.SelectData):
        return str(evt.row_value[0]) if evt.row_value else gr.skip()

    rows_table.select(pick_row, None, question_id, api_visibility="private").then(
        friendly(lambda *x: split_question(ctx, *x)), question_inputs, question_outputs, api_visibility="private")
    return refresh_fn
