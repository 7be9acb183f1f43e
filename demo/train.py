"""Train: phase-1 and phase-2 runs as child processes with live progress, curves, log tail and cancel.

Jobs are found again from their run folders (`job.json`), so a page reload or a new app process shows them."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from demo.widgets import answer_mode_radio, friendly, stage_type_dropdown
from tinythinker import jobs, plots
from tinythinker.jobs import (
    ANSWER_FORMATS,
    BENCHMARKS,
    DPO_STAGE_TYPES,
    NAMED_STUDENTS,
    PAIR_MODES,
    ReflectSettings,
    TrainSettings,
)
from tinythinker.runs import list_runs, read_metrics


def job_choices(ctx) -> list[str]:
    return [j.name for j in jobs.list_jobs(ctx.ws)]


def phase1_choices(ctx) -> list[str]:
    """Phase-1 runs with a best checkpoint: what phase 2 can start from."""
    return [ctx.ws.relative(Path(r.path)) for r in list_runs(ctx.ws.runs_dir) if r.command == "train" and r.has_best]


def start_phase1(ctx, run, data, student, stage_type, interval, epochs, limit, eval_limit, max_steps,
                 batch_size, lr, seed, warmup_steps=0, answer_format="letter", restrict_answer="free",
                 cross_attention_lr_scale=1.0):
    settings = TrainSettings(run=run, data=data, student=student, stage_type=stage_type, interval=interval,
                             epochs=epochs, limit=limit, eval_limit=eval_limit, max_steps=max_steps,
                             batch_size=batch_size, lr=lr, seed=seed, warmup_steps=warmup_steps,
                             answer_format=answer_format, restrict_answer=restrict_answer,
                             cross_attention_lr_scale=cross_attention_lr_scale)
    job = jobs.start(jobs.train_args(settings, ctx.ws), ctx.ws.run_dir(run), kind="phase 1")
    return gr.update(choices=job_choices(ctx), value=job.name)


def start_phase2(ctx, run, from_run, iterations, samples, stage_type, pairs, limit, eval_limit, beta, alpha, lr,
                 seed):
    settings = ReflectSettings(run=run, from_run=from_run, iterations=iterations, samples=samples,
                               stage_type=stage_type, pairs=pairs, limit=limit, eval_limit=eval_limit, beta=beta,
                               alpha=alpha, lr=lr, seed=seed)
    job = jobs.start(jobs.reflect_args(settings, ctx.ws), ctx.ws.run_dir(run), kind="phase 2")
    return gr.update(choices=job_choices(ctx), value=job.name)


def _bar(fraction: float | None) -> str:
    if fraction is None:
        return "<div>starting…</div>"
    pct = round(100 * fraction)
    return (f'<div class="tt-progress"><progress max="100" value="{pct}" style="width:100%"></progress>'
            f"<span>{pct}%</span></div>")


def view(ctx, name):
    """Status line, progress bar, curves and log tail of one job."""
    if not name:
        return "No job selected.", _bar(None), plots.training_curves([]), ""
    run_dir = ctx.ws.run_dir(name, "job")
    job = jobs.load_job(run_dir)
    if job is None:
        raise ValueError(f"job: no job in run folder {name!r}")
    job = jobs.refresh(job)
    elapsed = (job.finished or time.time()) - job.started
    if job.finished is None:
        state = "running"
    elif job.cancelled:
        state = "cancelled"
    else:
        state = "finished" if job.returncode == 0 else f"failed (exit code {job.returncode})"
    status = f"**{job.name}** · {job.kind} · {state} · {elapsed:.0f} s · pid {job.pid}"
    fraction = 1.0 if state == "finished" else jobs.progress(job)
    return status, _bar(fraction), plots.training_curves(read_metrics(run_dir), title=job.name), jobs.log_tail(job)


def tick(ctx, name):
    """The timer's refresh: redraw only while the job runs (and once just after it ends)."""
    job = jobs.load_job(ctx.ws.run_dir(name, "job")) if name else None
    if job is None or (job.finished is not None and time.time() - job.finished > 5):
        return (gr.skip(),) * 4
    return view(ctx, name)


def cancel(ctx, name):
    if not name:
        raise ValueError("job: select a job to cancel")
    job = jobs.load_job(ctx.ws.run_dir(name, "job"))
    if job is None:
        raise ValueError(f"job: no job in run folder {name!r}")
    jobs.cancel(job)
    return view(ctx, name)


def build(ctx) -> None:
    students = [*NAMED_STUDENTS, *(value for _, value in ctx.checkpoint_choices(include_untrained=False))]
    with gr.Tab("phase 1 · coarse-to-fine"):
        with gr.Row():
            p1_run = gr.Textbox(time.strftime("p1-%Y%m%d-%H%M"), label="run name (folder in runs/)",
                                elem_id="train-p1-run")
            p1_data = gr.Dropdown(list(BENCHMARKS), value="csqa", label="benchmark")
            p1_student = gr.Dropdown(students, value=ctx.default_student, allow_custom_value=True, label="student")
            p1_stage = stage_type_dropdown()
        with gr.Row():
            p1_interval = gr.Number(20, precision=0, label="interval")
            p1_epochs = gr.Number(1.0, label="epochs")
            p1_limit = gr.Number(2000, precision=0, label="training questions (0 = all)")
            p1_eval = gr.Number(200, precision=0, label="validation questions (0 = all)")
            p1_steps = gr.Number(0, precision=0, label="max steps (0 = epochs decide)")
            p1_bs = gr.Number(16, precision=0, label="batch size")
            p1_lr = gr.Number(5e-5, label="learning rate (bert2bert: 1e-4)")
            p1_seed = gr.Number(0, precision=0, label="seed")
        with gr.Row():
            p1_warmup = gr.Number(50, precision=0, label="warm-up steps")
            p1_xattn = gr.Number(1.0, label="cross-attention lr x (bert2bert only, where 10 learned; 1 otherwise)")
            p1_format = gr.Dropdown(list(ANSWER_FORMATS), value="text_letter",
                                    label="answer target (letter = the paper's; letter_text / text_letter add the "
                                          "option's words after / before the letter)")
            p1_restrict = answer_mode_radio("score")
        gr.Markdown("Pre-filled with the recipe under which the offline students learn (bench/RESULTS.md, r2): "
                    "the option's words before the letter, answers scored, warm-up; SmolLM2 at lr 5e-5, bert2bert "
                    "at lr 1e-4 with cross-attention x10. The paper's own: answer target `letter`, answer `free`, "
                    "learning rate 5e-4, no warm-up.")
        p1_go = gr.Button("Start phase 1", variant="primary", elem_id="train-p1-start")
    with gr.Tab("phase 2 · self-reflection"):
        with gr.Row():
            p2_run = gr.Textbox(time.strftime("p2-%Y%m%d-%H%M"), label="run name (folder in runs/)")
            phase1_runs = phase1_choices(ctx)
            p2_from = gr.Dropdown(phase1_runs, value=phase1_runs[0] if phase1_runs else None,
                                  allow_custom_value=True, label="from phase-1 run (folder in runs/)")
            p2_stage = gr.Dropdown(list(DPO_STAGE_TYPES), value="recall_analyze", label="stages to reflect on")
            p2_pairs = gr.Dropdown(list(PAIR_MODES), value="auto",
                                   label="pairs (curated = labelled in Annotate)")
        with gr.Row():
            p2_iter = gr.Number(3, precision=0, label="iterations")
            p2_samples = gr.Number(10, precision=0, label="samples per question")
            p2_limit = gr.Number(500, precision=0, label="training questions (0 = all)")
            p2_eval = gr.Number(200, precision=0, label="validation questions (0 = all)")
            p2_beta = gr.Number(0.5, label="beta")
            p2_alpha = gr.Number(0.5, label="alpha (NLL weight)")
            p2_lr = gr.Number(5e-6, label="learning rate")
            p2_seed = gr.Number(0, precision=0, label="seed")
        p2_go = gr.Button("Start phase 2", variant="primary")
    gr.Markdown("### Jobs")
    with gr.Row():
        job = gr.Dropdown(job_choices(ctx), value=(job_choices(ctx) or [None])[0], label="job", elem_id="train-job")
        refresh = gr.Button("↻", scale=0, min_width=40)
        stop = gr.Button("Cancel job", variant="stop", scale=0, elem_id="train-cancel")
    status = gr.Markdown(elem_id="train-status")
    bar = gr.HTML(elem_id="train-progress")
    curves = gr.Plot()
    log = gr.Textbox(label="log tail", lines=12, max_lines=12, autoscroll=True, interactive=False,
                     elem_id="train-log")
    timer = gr.Timer(2.0)

    # Events, all in one place.
    p1_go.click(friendly(lambda *a: start_phase1(ctx, *a)),
                [p1_run, p1_data, p1_student, p1_stage, p1_interval, p1_epochs, p1_limit, p1_eval, p1_steps, p1_bs,
                 p1_lr, p1_seed, p1_warmup, p1_format, p1_restrict, p1_xattn], job, api_name="start_phase1")
    p2_go.click(friendly(lambda *a: start_phase2(ctx, *a)),
                [p2_run, p2_from, p2_iter, p2_samples, p2_stage, p2_pairs, p2_limit, p2_eval, p2_beta, p2_alpha, p2_lr,
                 p2_seed], job, api_name="start_phase2")
    refresh.click(lambda: (gr.update(choices=job_choices(ctx)), gr.update(choices=phase1_choices(ctx))), None,
                  [job, p2_from], api_visibility="private")
    show = friendly(lambda name: view(ctx, name))
    outputs = [status, bar, curves, log]
    job.change(show, job, outputs, api_name="job_status")
    timer.tick(friendly(lambda name: tick(ctx, name)), job, outputs, api_visibility="private",
               show_progress="hidden")
    stop.click(friendly(lambda name: cancel(ctx, name)), job, outputs, api_name="cancel_job")
