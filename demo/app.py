"""One gr.Blocks from the tab modules, plus the first-start notice with its one-click quick run."""

from __future__ import annotations

import threading

import gradio as gr

from demo import annotate, compare, explore, results, step, train
from demo.context import AppContext
from demo.widgets import friendly
from tinythinker import jobs

CSS = ".tt-progress {display: flex; gap: 8px; align-items: center} .tt-progress progress {height: 14px}"

FIRST_START = (
    "### No trained model yet\n"
    "There is no trained run in `{runs}`. An untrained student has not learned the stage formats, so the tabs "
    "below have nothing real to show. Start a **quick run** (the default student `{student}` on a 200-question CSQA slice, "
    "one 70-step cycle of the schedule, minutes on an idle CPU; follow it in the Train tab), or train your own run there. The untrained default can "
    "still be picked in Step through, labelled as untrained."
)


QUICK_KIND = "phase 1 (quick run)"


def quick_run(ctx: AppContext) -> str:
    running = [j for j in jobs.list_jobs(ctx.ws) if j.kind == QUICK_KIND and jobs.is_running(j)]
    if running:  # a second click must not start a second training on the same CPU
        return f"Quick run **{running[0].name}** is already running: follow it in the **Train** tab."
    settings = jobs.quick_run_settings(student=ctx.default_student)
    job = jobs.start(jobs.train_args(settings, ctx.ws), ctx.ws.run_dir(settings.run), kind=QUICK_KIND)
    return (f"Started quick run **{job.name}** (pid {job.pid}). Follow it in the **Train** tab; when it finishes, "
            f"pick `{job.name}/best` in Step through (press ↻ to refresh the list).")


def warm_up(threads: int | None = 1) -> threading.Thread:
    """Import the model stack (torch, transformers) in the background once the app is serving, so start-up does
    not wait for it and the first click mostly does not either.

    `threads` sets torch's intra-op threads. One by default: the app generates for one question at a time, where
    the matrices are too small for threads to pay for their synchronisation; on this shared 2-core machine one
    Recall of the default student took 9 s with 1 thread and 52-68 s with 2 (bench/app_latency.py notes)."""

    def load():
        import torch

        if threads:
            torch.set_num_threads(threads)
        import tinythinker.pipeline  # noqa: F401

    thread = threading.Thread(target=load, name="warm-up", daemon=True)
    thread.start()
    return thread


def launch_kwargs() -> dict:
    """Look-and-feel arguments, which gradio 6 takes in launch() rather than in Blocks()."""
    return {"css": CSS, "head": annotate.KEYS_JS, "theme": gr.themes.Soft()}


def build_app(ctx: AppContext) -> gr.Blocks:
    # No telemetry: the app runs offline next to research data.
    with gr.Blocks(title="TinyThinker Studio", analytics_enabled=False) as app:
        gr.Markdown("# TinyThinker Studio\nRecall → Analyze → Summarize, distilled into a small student.")
        with gr.Group(visible=not ctx.has_trained()) as first_start:
            gr.Markdown(FIRST_START.format(runs=ctx.ws.runs_dir, student=ctx.default_student),
                        elem_id="first-start")
            start_quick = gr.Button("Start a quick run", variant="primary", elem_id="quick-run")
            quick_status = gr.Markdown(elem_id="quick-run-status")
        saved_name = gr.BrowserState("", storage_key="tinythinker-annotator")
        with gr.Tabs():
            with gr.Tab("Explore", id="explore"):
                explore.build(ctx)
            with gr.Tab("Step through", id="step"):
                step.build(ctx)
            with gr.Tab("Compare", id="compare"):
                compare.build(ctx)
            with gr.Tab("Train", id="train"):
                train.build(ctx)
            with gr.Tab("Annotate", id="annotate"):
                restore_name = annotate.build(ctx, saved_name)
            with gr.Tab("Results", id="results"):
                list_runs, run_outputs = results.build(ctx)

        # App-level events.
        start_quick.click(friendly(lambda: quick_run(ctx)), None, quick_status, api_name="quick_run")
        app.load(lambda: gr.update(visible=not ctx.has_trained()), None, first_start, api_visibility="private")
        app.load(list_runs, None, run_outputs, api_visibility="private")
        app.load(*restore_name, api_visibility="private")
    return app
