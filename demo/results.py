"""Results: every run in runs/ with its config, status and charts, and the shipped students with their cached
validation traces (accuracy, how answers flip from phase 1 to its self-reflected successor, and from the
answer-only baseline to phase 1 where one ships)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo.widgets import friendly
from tinythinker import jobs, plots
from tinythinker.runs import list_runs, read_config, read_metrics
from tinythinker.shipped import ROLE_WORDS, read_cached_traces, shipped_baseline, shipped_pair
from tinythinker.workspace import RUNS

HEADERS = ["run", "command", "student", "data", "stage type", "step", "best acc", "last acc", "status"]
SHIPPED_HEADERS = ["model", "role", "from", "base", "stage type", "answer", "val acc (model card)",
                   "cached traces", "acc on cached traces"]


def _student(ctx, summary) -> str:
    """A phase-2 run's config names the phase-1 run it started from, not a student."""
    if summary.student or summary.command != "reflect":
        return summary.student
    source = read_config(summary.path).get("from_run", "")
    return f"from {ctx.ws.relative(Path(source))}" if source else ""


def table(ctx):
    summaries = list_runs(ctx.ws.runs_dir)
    rows = [[ctx.ws.relative(Path(s.path)), s.command, _student(ctx, s), s.data, s.stage_type, s.step,
             None if s.best_accuracy is None else round(s.best_accuracy, 4),
             None if s.last_accuracy is None else round(s.last_accuracy, 4),
             jobs.run_status(Path(s.path), s.finished)] for s in summaries]
    names = [r[0] for r in rows]
    note = "" if rows else ("No run in runs/ yet: train one in the Train tab (or start the quick run)."
                            + (" The shipped students are below." if ctx.shipped() else ""))
    return (rows, plots.accuracy_by_stage_type([{**s.to_dict(), "name": n} for s, n in zip(summaries, names, strict=True)]),
            gr.update(choices=names, value=names[0] if names else None), note)


def one_run(ctx, name):
    if not name:
        return {}, plots.training_curves([]), gr.update(visible=False), ""
    run = ctx.ws.resolve(name, RUNS, field="run")
    config = read_config(run)
    records = read_metrics(run)
    if config.get("command") != "reflect":  # self-reflection is phase 2's: no such chart for a phase-1 run
        return config, plots.training_curves(records, title=name), gr.update(visible=False), ""
    baseline = None
    source = config.get("from") or config.get("from_run")
    if source:
        try:  # phase 2: the phase-1 model it started from is iteration 0
            baseline = max((r["accuracy"] for r in read_metrics(ctx.ws.resolve(source, RUNS, field="from run"))
                            if r.get("kind") == "eval" and r.get("accuracy") is not None), default=None)
        except ValueError:
            baseline = None
    return (config, plots.training_curves(records, title=name),
            gr.update(value=plots.accuracy_by_iteration(records, baseline=baseline), visible=True), "")


def shipped(ctx):
    """The shipped students from their cached traces (no model runs): a row each, the phase-1 -> reflected flips
    chart, and the model cards."""
    from tinythinker.compare import flip_counts

    models = ctx.shipped()
    rows, traces = [], {}
    for m in models:
        cached = read_cached_traces(m)
        traces[m.name] = cached
        labelled = [t for t in cached if t.correct is not None]
        acc = round(sum(bool(t.correct) for t in labelled) / len(labelled), 4) if labelled else None
        rows.append([m.name, ROLE_WORDS.get(m.role, m.role), m.parent or "", m.base or "", m.stage_type,
                     m.restrict_answer, None if m.val_acc is None else round(m.val_acc, 4), len(cached), acc])
    p1, p2 = shipped_pair(models)
    if p1 is not None and p2 is not None:
        chart = plots.flips(flip_counts(traces[p1.name], traces[p2.name]), p1.name, p2.name)
    else:
        chart = plots.flips({}, "phase 1", "reflected")
    # The method's first claim: the answer-only twin against the pair's phase-1 student, where one ships.
    baseline = shipped_baseline(models)
    if baseline is not None and p1 is not None:
        against = gr.update(value=plots.flips(flip_counts(traces[baseline.name], traces[p1.name]),
                                              baseline.name, p1.name), visible=True)
    else:
        against = gr.update(visible=False)
    cards = "\n\n---\n\n".join(f"### {m.name}\n\n{m.card() or '(no model card)'}" for m in models)
    note = "No shipped students in this installation (demo/models/ is empty)."
    return rows, chart, against, cards or note, gr.skip()


def build(ctx):
    """Returns the (fn, outputs) pair of the runs table, which the app refreshes on page load and job ends."""
    message = gr.Markdown(elem_id="results-message")
    refresh = gr.Button("↻ Refresh runs", size="sm")
    runs = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="results-table")
    by_type = gr.Plot()
    run = gr.Dropdown([], label="run (folder in runs/)", allow_custom_value=True, elem_id="results-run")
    with gr.Row():
        curves = gr.Plot()
        iterations = gr.Plot(visible=False)
    config = gr.JSON(label="config.json")
    with gr.Accordion("Shipped students (from their cached validation traces)", open=True, elem_id="results-shipped"):
        shipped_table = gr.Dataframe(headers=SHIPPED_HEADERS, interactive=False, elem_id="results-shipped-table")
        with gr.Row():
            shipped_chart = gr.Plot()
            baseline_chart = gr.Plot(visible=False)
        with gr.Accordion("model cards", open=False):
            cards = gr.Markdown(elem_id="results-cards")

    # Events, all in one place. Errors go to the message line (the last output), once.
    list_fn = friendly(lambda: table(ctx), 4, 3)
    refresh.click(list_fn, None, [runs, by_type, run, message], api_name="results")
    run.change(friendly(lambda n: one_run(ctx, n), 4, 3), run, [config, curves, iterations, message],
               api_name="run_detail")
    shipped_fn = friendly(lambda: shipped(ctx), 5, 4)
    shipped_outputs = [shipped_table, shipped_chart, baseline_chart, cards, message]
    refresh.click(shipped_fn, None, shipped_outputs, api_name="results_shipped")
    return [(list_fn, None, [runs, by_type, run, message]), (shipped_fn, None, shipped_outputs)]
