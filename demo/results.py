"""Results: every run in runs/ with its config and charts."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo.widgets import friendly
from tinythinker import plots
from tinythinker.runs import list_runs, read_config, read_metrics
from tinythinker.workspace import RUNS

HEADERS = ["run", "command", "student", "data", "stage type", "step", "best acc", "last acc", "finished"]


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
             None if s.last_accuracy is None else round(s.last_accuracy, 4), s.finished] for s in summaries]
    names = [r[0] for r in rows]
    return (rows, plots.accuracy_by_stage_type([{**s.to_dict(), "name": n} for s, n in zip(summaries, names, strict=True)]),
            gr.update(choices=names, value=names[0] if names else None))


def one_run(ctx, name):
    if not name:
        return {}, plots.training_curves([]), plots.accuracy_by_iteration([])
    run = ctx.ws.resolve(name, RUNS, field="run")
    config = read_config(run)
    records = read_metrics(run)
    baseline = None
    source = config.get("from") or config.get("from_run")
    if source:
        try:  # phase 2: the phase-1 model it started from is iteration 0
            baseline = max((r["accuracy"] for r in read_metrics(ctx.ws.resolve(source, RUNS, field="from run"))
                            if r.get("kind") == "eval" and r.get("accuracy") is not None), default=None)
        except ValueError:
            baseline = None
    return (config, plots.training_curves(records, title=name),
            plots.accuracy_by_iteration(records, baseline=baseline))


def build(ctx) -> None:
    refresh = gr.Button("↻ Refresh runs", size="sm")
    runs = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="results-table")
    by_type = gr.Plot()
    run = gr.Dropdown([], label="run (folder in runs/)", allow_custom_value=True, elem_id="results-run")
    with gr.Row():
        curves = gr.Plot()
        iterations = gr.Plot()
    config = gr.JSON(label="config.json")

    # Events, all in one place.
    list_fn = friendly(lambda: table(ctx))
    refresh.click(list_fn, None, [runs, by_type, run], api_name="results")
    run.change(friendly(lambda n: one_run(ctx, n)), run, [config, curves, iterations], api_name="run_detail")
    return list_fn, [runs, by_type, run]
