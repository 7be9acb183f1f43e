"""One gr.Blocks from the tab modules, plus the first page: what the method is, what is ready to look at (the
shipped students), and the one-click quick run where data can be read."""

from __future__ import annotations

import threading

import gradio as gr

from demo import annotate, compare, explore, results, step, train
from demo.context import AppContext
from demo.widgets import friendly, no_training_data
from tinythinker import jobs
from tinythinker.shipped import shipped_baseline

CSS = (".tt-progress {display: flex; gap: 8px; align-items: center} .tt-progress progress {height: 14px} "
       ".tt-ended {color: #b71c1c}")

METHOD = """\
TinyThinker (Piao & Park, *TinyThinker: Distilling Reasoning through Coarse-to-Fine Knowledge Internalization
with Self-Reflection*, NAACL 2025) teaches a small student model to answer multiple-choice questions the way a
large teacher reasons, in three stages. Each stage is one text-to-text call of the same student, and each sees
what the earlier stages wrote:

1. **Recall**: the general knowledge the question calls for, before weighing the options (coarse).
2. **Analyze**: one short explanation per option, why it fits the question or not (fine).
3. **Summarize**: the answer, `So the answer is option X.`, read from the recall and the analyses.

**Phase 1, reasoning acquisition.** The student is fine-tuned on a teacher's rationales (for CSQA, the ECQA
explanations), switching between the Recall, Analyze and Summarize datasets on an *interval schedule* (a block of
Recall steps, then Analyze, then Summarize, repeated), so that it learns to go from coarse knowledge to a fine
decision. **Phase 2, self-reflection.** The student samples its own recalls and analyses; a text that led to the
right answer is preferred over one that led to a wrong answer, and iterative DPO (with an NLL term on the
preferred text) trains the student on these pairs, round after round.

In this app: **Explore** shows the teacher's rationales as the student sees them in training; **Step through**
runs a student one stage at a time (edit a stage, re-run what follows); **Compare** puts two students side by
side, one question or a whole split; **Train** runs phase 1 and phase 2; **Annotate** labels the students'
stages good or bad (the labels become phase 2's curated pairs); **Results** shows every run and the shipped
students.
"""

QUICK_KIND = "phase 1 (quick run)"


def _pace(ctx, argv) -> str:
    """The measured time of a step of an earlier job with the same student and batch size, in words."""
    seconds = jobs.measured_step_seconds(ctx.ws, argv)
    if seconds is None:
        return ("On a 2-core CPU a SmolLM2 step has taken about a minute (so over an hour in all); the Train tab "
                "shows this job's own pace and ETA from its first steps")
    return (f"An earlier run with this student and batch size took {seconds:.0f} s a step, so about "
            f"{jobs.duration(seconds * QUICK_STEPS)} of training; the Train tab shows this job's own ETA")


QUICK_STEPS = jobs.quick_run_settings("probe").max_steps


def start_panel(ctx) -> tuple:
    """The first page's panel (text, quick-run button visibility, panel visibility): what is ready to look at,
    and the quick run only where its data can be read (else why not, and how to point at data)."""
    shipped = ctx.shipped()
    parts = []
    if shipped:
        names = ", ".join(f"**{m.label}**" for m in shipped)
        parts.append(f"### Ready to explore\nThe app ships with trained students: {names}. Step through one "
                     "question with them, compare phase 1 with its self-reflected successor (preselected in "
                     "Compare), see their accuracy and flips in Results, and label their cached validation traces "
                     "in Annotate. No training needed.")
        baseline = shipped_baseline(shipped)
        if baseline is not None:
            parts.append(f"`{baseline.name}` is the answer-only twin the method is measured against (trained on "
                         "the answers alone, same data and steps): pick it in Compare against a TinyThinker student "
                         "to see the questions where the three stages win and lose.")
    elif not ctx.has_trained():
        parts.append(f"### No trained model yet\nThere is no trained run in `{ctx.ws.runs_dir}`. An untrained "
                     "student has not learned the stage formats, so the tabs below have little real to show; "
                     "the untrained default can still be picked in Step through, marked as untrained.")
    else:
        parts.append("### Your runs\nStep through, Compare and Results list your trained checkpoints.")
    problem = ctx.data_problem()
    settings = jobs.quick_run_settings(student=ctx.default_student)
    if problem is None:
        argv = jobs.train_args(settings, ctx.ws)
        parts.append(f"#### Or train your own: the quick run\nThe default student `{ctx.default_student}` on a "
                     f"{settings.limit}-question CSQA slice, {settings.max_steps} optimizer steps (one cycle of the "
                     f"schedule) and one evaluation on {settings.eval_limit} questions. {_pace(ctx, argv)}. Cancel "
                     "keeps the last checkpoint, and starting it again resumes. Or set up your own run in Train.")
        offer = True
    else:
        parts.append("#### Quick run not offered\n" + no_training_data(problem))
        offer = False
    # Open on a first start (nothing trained) and while shipped students are the thing to look at; once the user
    # has runs of their own it stays on the page, closed: the quick run remains an option.
    return "\n\n".join(parts), gr.update(visible=offer), gr.update(open=bool(shipped) or not ctx.has_trained())


def quick_run(ctx: AppContext) -> str:
    problem = ctx.data_problem()
    if problem is not None:
        raise ValueError(f"the quick run needs the CSQA training data, which cannot be read here ({problem}); "
                         "start the app with --data-dir DIR")
    running = [j for j in jobs.list_jobs(ctx.ws) if j.kind == QUICK_KIND and jobs.is_running(j)]
    if running:  # a second click must not start a second training on the same CPU
        return f"Quick run **{running[0].name}** is already running: follow it in the **Train** tab."
    settings = jobs.quick_run_settings(student=ctx.default_student)
    argv = jobs.train_args(settings, ctx.ws)
    estimate = jobs.check_memory(argv, ctx.ws)
    job = jobs.start(argv, ctx.ws.run_dir(settings.run), kind=QUICK_KIND,
                     memory_estimate=estimate.need if estimate else None)
    return (f"Started quick run **{job.name}** (pid {job.pid}): {settings.max_steps} steps. {_pace(ctx, argv)}. "
            f"When it ends, `{job.name}/best` appears in Step through and Compare by itself.")


def jobs_ended(ctx: AppContext) -> str:
    """A fingerprint of the jobs that have ended: it changes exactly when one more has."""
    try:
        return ";".join(f"{j.name}:{j.finished}" for j in jobs.list_jobs(ctx.ws) if j.finished is not None)
    except OSError:
        return ""


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
    return {"css": CSS, "head": annotate.KEYS_JS + annotate.PAIR_KEYS_JS, "theme": gr.themes.Soft()}


def build_app(ctx: AppContext) -> gr.Blocks:
    ctx.prepare()  # the shipped students' cached traces into the store (once)
    # No telemetry: the app runs offline next to research data.
    with gr.Blocks(title="TinyThinker Studio", analytics_enabled=False) as app:
        gr.Markdown("# TinyThinker Studio\nRecall → Analyze → Summarize, distilled into a small student.")
        with gr.Accordion("What is TinyThinker? The method in two minutes", open=False, elem_id="method"):
            gr.Markdown(METHOD, elem_id="method-text")
        with gr.Accordion("Start here: what is ready, and the quick run", open=True,
                          elem_id="first-start-box") as first_start:
            panel = gr.Markdown("Checking what is ready...", elem_id="first-start")
            start_quick = gr.Button("Start a quick run", variant="primary", elem_id="quick-run", visible=False)
            quick_status = gr.Markdown(elem_id="quick-run-status")
        saved_name = gr.BrowserState("", storage_key="tinythinker-annotator")
        # Changes when any job ends (a Train job, a traces job, the quick run): every list of models is refreshed.
        ended = gr.State(jobs_ended(ctx))
        watch = gr.Timer(3.0)
        with gr.Tabs():
            with gr.Tab("Explore", id="explore"):
                explore_load = explore.build(ctx)
            with gr.Tab("Step through", id="step"):
                step_refresh, step_load = step.build(ctx)
            with gr.Tab("Compare", id="compare"):
                compare_refresh = compare.build(ctx)
            with gr.Tab("Train", id="train"):
                train_refresh = train.build(ctx)
            with gr.Tab("Annotate", id="annotate"):
                restore_name, annotate_refresh = annotate.build(ctx, saved_name)
            with gr.Tab("Results", id="results"):
                results_refresh = results.build(ctx)

        # App-level events. Lists are filled on every page load and again whenever a job ends.
        watch.tick(lambda: jobs_ended(ctx), None, ended, api_visibility="private", show_progress="hidden")
        start_quick.click(friendly(lambda: quick_run(ctx), 1, 0), None, quick_status, api_name="quick_run")
        panel_fn = friendly(lambda: start_panel(ctx), 3, 0)
        app.load(panel_fn, None, [panel, start_quick, first_start], api_name="start_panel")
        ended.change(panel_fn, None, [panel, start_quick, first_start], api_visibility="private")
        for fn, inputs, outputs in [step_refresh, compare_refresh, train_refresh, *annotate_refresh,
                                    *results_refresh]:
            app.load(fn, inputs, outputs, api_visibility="private")
            ended.change(fn, inputs, outputs, api_visibility="private")
        for fn, inputs, outputs in [*explore_load, *step_load]:
            app.load(fn, inputs, outputs, api_visibility="private")
        app.load(*restore_name, api_visibility="private")
    return app
