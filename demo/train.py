"""Train: phase-1 and phase-2 runs as child processes with live progress, curves, log tail and cancel.

Jobs are found again from their run folders (`job.json`), so a page reload or a new app process shows them."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from demo.widgets import answer_mode_radio, friendly, no_training_data, stage_type_dropdown
from tinythinker import jobs, plots
from tinythinker.jobs import (
    ANSWER_FORMATS,
    BENCHMARKS,
    DPO_STAGE_TYPES,
    NAMED_STUDENTS,
    ORDERS,
    PAIR_MODES,
    ReflectSettings,
    TrainSettings,
)
from tinythinker.runs import list_runs, read_metrics
from tinythinker.shipped import ranked_phase1


def job_choices(ctx) -> list[str]:
    return [j.name for j in jobs.list_jobs(ctx.ws)]


def phase1_choices(ctx) -> list[str]:
    """What phase 2 can start from: phase-1 runs with a best checkpoint, then the shipped phase-1 students (the
    best first), so a user without a run of their own can reflect the shipped student."""
    runs_ = [ctx.ws.relative(Path(r.path)) for r in list_runs(ctx.ws.runs_dir) if r.command == "train" and r.has_best]
    return runs_ + [m.name for m in ranked_phase1(ctx.shipped())]


def student_choices(ctx) -> list[str]:
    return [*NAMED_STUDENTS, *(value for _, value in ctx.checkpoint_choices(include_untrained=False))]


def _launch(ctx, settings, argv, kind):
    """The checks every start shares, before anything runs: the run name (a reused one only with the same
    settings, to resume), then memory; returns (job dropdown update, message)."""
    note = jobs.check_run(ctx.ws.run_dir(settings.run), jobs.planned_config(settings, argv))
    estimate = jobs.check_memory(argv, ctx.ws)
    job = jobs.start(argv, ctx.ws.run_dir(settings.run), kind=kind,
                     memory_estimate=estimate.need if estimate else None)
    memory = (f" Expected peak memory about {jobs.gigabytes(estimate.need)} of "
              f"{jobs.gigabytes(estimate.available)} available ({estimate.basis})." if estimate else "")
    message = f"Started **{job.name}** (pid {job.pid}){f': {note}' if note else ''}.{memory}"
    return gr.update(choices=job_choices(ctx), value=job.name), message


def start_phase1(ctx, run, data, student, stage_type, interval, epochs, limit, eval_limit, max_steps,
                 batch_size, lr, seed, warmup_steps=0, answer_format="letter", restrict_answer="free",
                 cross_attention_lr_scale=1.0, lora_r=0, order="interval", grad_accum=1):
    settings = TrainSettings(run=run, data=data, student=student, stage_type=stage_type, interval=interval,
                             epochs=epochs, limit=limit, eval_limit=eval_limit, max_steps=max_steps,
                             batch_size=batch_size, lr=lr, seed=seed, warmup_steps=warmup_steps,
                             answer_format=answer_format, restrict_answer=restrict_answer,
                             cross_attention_lr_scale=cross_attention_lr_scale, lora_r=lora_r, order=order,
                             grad_accum=grad_accum)
    return _launch(ctx, settings, jobs.train_args(settings, ctx.ws), "phase 1")


def start_phase2(ctx, run, from_run, iterations, samples, stage_type, pairs, limit, eval_limit, beta, alpha, lr,
                 seed, refuse_failing_pairs=False, lora_r=0, teacher_fill=True):
    settings = ReflectSettings(run=run, from_run=from_run, iterations=iterations, samples=samples,
                               stage_type=stage_type, pairs=pairs, limit=limit, eval_limit=eval_limit, beta=beta,
                               alpha=alpha, lr=lr, seed=seed, refuse_failing_pairs=bool(refuse_failing_pairs),
                               lora_r=lora_r, teacher_fill=bool(teacher_fill))
    return _launch(ctx, settings, jobs.reflect_args(settings, ctx.ws), "phase 2")


def _bar(st: jobs.JobStatus | None) -> str:
    """The progress bar while a job runs; once it has ended, how it ended (never "starting" for a dead job)."""
    if st is None:
        return "<div>no job</div>"
    if st.state in (jobs.RUNNING, jobs.STOPPING) and st.fraction is None:
        return "<div>starting (loading data and model)...</div>"
    if st.state not in (jobs.RUNNING, jobs.STOPPING, jobs.FINISHED):
        at = "" if st.fraction is None else f" at {round(100 * st.fraction)}%"
        return f'<div class="tt-ended"><b>{st.state}</b>{at}</div>'
    pct = round(100 * (st.fraction or 0.0))
    return (f'<div class="tt-progress"><progress max="100" value="{pct}" style="width:100%"></progress>'
            f"<span>{pct}%</span></div>")


def _job(ctx, name):
    if not name:
        return None
    job = jobs.load_job(ctx.ws.run_dir(name, "job"))
    if job is None:
        raise ValueError(f"job: no job in run folder {name!r}")
    return job


def view(ctx, name):
    """Status line, progress bar, curves and log tail of one job."""
    job = _job(ctx, name)
    if job is None:
        return "No job selected.", _bar(None), plots.training_curves([]), ""
    st = jobs.status(job)
    elapsed = (job.finished or time.time()) - job.started
    expected = (f" · expected peak {jobs.gigabytes(job.memory_estimate)}"
                if job.memory_estimate and st.state in (jobs.RUNNING, jobs.STOPPING) else "")
    status = f"**{job.name}** · {job.kind} · {st.text} · {jobs.duration(elapsed)}{expected} · pid {job.pid}"
    return status, _bar(st), plots.training_curves(read_metrics(job.run_dir), title=job.name), jobs.log_tail(job)


def tick(ctx, name, drawn):
    """The timer's refresh: redraw while the job runs, and once more after it has ended (`drawn` remembers the
    ended job last drawn, however late the timer fires on a busy machine)."""
    job = jobs.load_job(ctx.ws.run_dir(name, "job")) if name else None
    if job is None:
        return (gr.skip(),) * 6
    jobs.refresh(job)
    ended = f"{job.name}:{job.finished}" if job.finished is not None else ""
    if ended and ended == drawn:
        return (gr.skip(),) * 6
    stopping = job.finished is None and job.cancel_requested is not None
    return (*view(ctx, name), gr.update(visible=stopping), ended)


def ask_cancel(ctx, name):
    """The first click on Cancel: say what cancelling keeps, and wait for a second, confirming click."""
    job = _job(ctx, name)
    if job is None:
        raise ValueError("job: select a job to cancel")
    if not jobs.is_running(job):
        return gr.update(visible=False), f"**{job.name}** is not running."
    keeps = ("it saves a checkpoint at the end of the current step, and starting the run again with the same name "
             "and settings resumes from it" if job.command == "train" else
             "finished iterations are kept" if job.command == "reflect" else "what it wrote so far is kept")
    return gr.update(visible=True), f"Cancel **{job.name}**? {keeps[0].upper() + keeps[1:]}."


def cancel(ctx, name):
    job = _job(ctx, name)
    if job is None:
        raise ValueError("job: select a job to cancel")
    jobs.cancel(job, wait=False)
    time.sleep(0.5)  # a job that stops at once is shown stopped
    return view(ctx, name)


def stop_now(ctx, name):
    job = _job(ctx, name)
    if job is None:
        raise ValueError("job: select a job to stop")
    jobs.kill(job)
    return view(ctx, name)


def refresh(ctx, job_value, from_value, student_value):
    """Fresh lists (page load, a job's end): jobs, phase-1 runs for phase 2, students; picks kept if they exist.
    And, where no training data can be read, the line saying so above the forms (a job would fail on it)."""
    names, p1, students = job_choices(ctx), phase1_choices(ctx), student_choices(ctx)
    problem = ctx.data_problem()
    notice = "" if problem is None else "**No training data.** " + no_training_data(problem)
    return (gr.update(choices=names, value=job_value if job_value in names else (names[0] if names else None)),
            gr.update(choices=p1, value=from_value if from_value in p1 else (p1[0] if p1 else None)),
            gr.update(choices=students, value=student_value), notice)


def build(ctx):
    """Returns (refresh fn, inputs, outputs) for the app's list refresh (page load, a job's end)."""
    students = student_choices(ctx)
    data_notice = gr.Markdown(elem_id="train-data-notice")
    with gr.Tab("phase 1 · coarse-to-fine"):
        with gr.Row():
            p1_run = gr.Textbox(time.strftime("p1-%Y%m%d-%H%M"), label="run name (folder in runs/)",
                                elem_id="train-p1-run")
            p1_data = gr.Dropdown(list(BENCHMARKS), value="csqa", label="benchmark")
            p1_student = gr.Dropdown(students, value=ctx.default_student, allow_custom_value=True, label="student",
                                     elem_id="train-p1-student")
            p1_stage = stage_type_dropdown()
        with gr.Row():
            p1_interval = gr.Number(20, precision=0, label="interval", elem_id="train-p1-interval")
            p1_epochs = gr.Number(1.0, label="epochs")
            p1_limit = gr.Number(2000, precision=0, label="training questions (0 = all)", elem_id="train-p1-limit")
            p1_eval = gr.Number(200, precision=0, label="validation questions (0 = all)", elem_id="train-p1-eval")
            p1_steps = gr.Number(0, precision=0, label="max steps (0 = epochs decide)", elem_id="train-p1-steps")
            p1_bs = gr.Number(4, precision=0, label="batch size (per forward)", elem_id="train-p1-bs")
            p1_accum = gr.Number(4, precision=0, label="gradient accumulation (step = batch x this)",
                                 elem_id="train-p1-accum")
            p1_lr = gr.Number(5e-4, label="learning rate (LoRA 5e-4; full fine-tuning: SmolLM2 5e-5, bert2bert 1e-4)")
            p1_seed = gr.Number(0, precision=0, label="seed")
        with gr.Row():
            p1_warmup = gr.Number(50, precision=0, label="warm-up steps", elem_id="train-p1-warmup")
            p1_xattn = gr.Number(1.0, label="cross-attention lr x (bert2bert only, where 10 learned; 1 otherwise)")
            p1_lora = gr.Number(16, precision=0, label="LoRA rank (0 = full fine-tuning; 16 trained the shipped "
                                                      "students)", elem_id="train-p1-lora")
            p1_order = gr.Dropdown(list(ORDERS), value="equal", elem_id="train-p1-order",
                                   label="schedule (interval = the paper's: Analyze gets n_options x interval steps "
                                         "per visit; equal: interval steps per stage)")
            p1_format = gr.Dropdown(list(ANSWER_FORMATS), value="text_letter",
                                    label="answer target (letter = the paper's; letter_text / text_letter add the "
                                          "option's words after / before the letter)")
            p1_restrict = answer_mode_radio("score")
        gr.Markdown("Pre-filled with the recipe of the best shipped student, `tinythinker-smollm2-p1-equal` "
                    "(bench/RESULTS.md): LoRA r=16 at lr 5e-4, the equal schedule, the option's words before the "
                    "letter, answers scored, warm-up; batch 16 as 4 x 4 accumulated (a few GB; 10.8 GB as one "
                    "batch of 16). For bert2bert: full fine-tuning at lr 1e-4 with cross-attention x10. The "
                    "paper's own: answer target `letter`, answer `free`, the interval schedule, full fine-tuning "
                    "at lr 5e-4. A job that would not fit in memory is refused before it starts, with the "
                    "estimate; a run name already used starts only with the same settings (it then resumes from "
                    "its last checkpoint).")
        p1_go = gr.Button("Start phase 1", variant="primary", elem_id="train-p1-start")
    with gr.Tab("phase 2 · self-reflection"):
        with gr.Row():
            p2_run = gr.Textbox(time.strftime("p2-%Y%m%d-%H%M"), label="run name (folder in runs/)")
            phase1_runs = phase1_choices(ctx)
            p2_from = gr.Dropdown(phase1_runs, value=phase1_runs[0] if phase1_runs else None,
                                  allow_custom_value=True,
                                  label="from phase-1 run (folder in runs/, or a shipped student)",
                                  elem_id="train-p2-from")
            p2_stage = gr.Dropdown(list(DPO_STAGE_TYPES), value="recall_analyze", label="stages to reflect on")
            p2_pairs = gr.Dropdown(list(PAIR_MODES), value="auto",
                                   label="pairs (curated = labelled in Annotate)")
            p2_refuse = gr.Checkbox(False, label="refuse curated pairs that fail a pair check",
                                    info="curated / both: the checks of Annotate's pair-check table run first; "
                                         "off, the job only logs the table", elem_id="train-p2-refuse")
            p2_fill = gr.Checkbox(True, label="teacher recalls fill the chosen side (the paper)",
                                  info="where a question's wrong samples outnumber its right ones; off, the "
                                       "student's own recalls only", elem_id="train-p2-teacher-fill")
        with gr.Row():
            p2_iter = gr.Number(3, precision=0, label="iterations")
            p2_samples = gr.Number(10, precision=0, label="samples per question")
            p2_limit = gr.Number(500, precision=0, label="training questions (0 = all)")
            p2_eval = gr.Number(200, precision=0, label="validation questions (0 = all)")
            p2_beta = gr.Number(0.5, label="beta")
            p2_alpha = gr.Number(0.5, label="alpha (NLL weight)")
            p2_lr = gr.Number(5e-6, label="learning rate")
            p2_seed = gr.Number(0, precision=0, label="seed")
            p2_lora = gr.Number(0, precision=0, label="LoRA rank for a student without one (0 = full; a LoRA "
                                                          "phase-1 run keeps its own adapter)",
                                elem_id="train-p2-lora")
        p2_go = gr.Button("Start phase 2", variant="primary")
    message = gr.Markdown(elem_id="train-message")
    gr.Markdown("### Jobs")
    with gr.Row():
        names = job_choices(ctx)
        job = gr.Dropdown(names, value=(names or [None])[0], label="job", elem_id="train-job")
        b_refresh = gr.Button("↻", scale=0, min_width=40)
        stop = gr.Button("Cancel job", variant="stop", scale=0, elem_id="train-cancel")
    with gr.Row(visible=False) as confirm_row:
        confirm_text = gr.Markdown(elem_id="train-cancel-question")
        confirm = gr.Button("Yes, cancel it", variant="stop", scale=0, elem_id="train-cancel-yes")
        keep = gr.Button("No, keep it running", scale=0, elem_id="train-cancel-no")
    with gr.Row(visible=False) as kill_row:
        gr.Markdown("Stopping: a training job finishes its current step and saves a checkpoint first.")
        kill_now = gr.Button("Stop now (no new checkpoint)", variant="stop", scale=0, elem_id="train-kill")
    status = gr.Markdown(elem_id="train-status")
    bar = gr.HTML(elem_id="train-progress")
    curves = gr.Plot()
    log = gr.Textbox(label="log tail", lines=12, max_lines=12, autoscroll=True, interactive=False,
                     elem_id="train-log")
    timer = gr.Timer(2.0)

    # Events, all in one place. Start errors go to the message under the forms, job errors to the status line.
    p1_go.click(friendly(lambda *a: start_phase1(ctx, *a), 2, 1),
                [p1_run, p1_data, p1_student, p1_stage, p1_interval, p1_epochs, p1_limit, p1_eval, p1_steps, p1_bs,
                 p1_lr, p1_seed, p1_warmup, p1_format, p1_restrict, p1_xattn, p1_lora, p1_order, p1_accum],
                [job, message],
                api_name="start_phase1")
    p2_go.click(friendly(lambda *a: start_phase2(ctx, *a), 2, 1),
                [p2_run, p2_from, p2_iter, p2_samples, p2_stage, p2_pairs, p2_limit, p2_eval, p2_beta, p2_alpha, p2_lr,
                 p2_seed, p2_refuse, p2_lora, p2_fill], [job, message], api_name="start_phase2")
    refresh_fn = (lambda *v: refresh(ctx, *v)), [job, p2_from, p1_student], [job, p2_from, p1_student, data_notice]
    b_refresh.click(*refresh_fn, api_visibility="private")
    show = friendly(lambda name: view(ctx, name), 4, 0)
    outputs = [status, bar, curves, log]
    job.change(show, job, outputs, api_name="job_status")
    drawn = gr.State("")
    timer.tick(friendly(lambda name, d: tick(ctx, name, d), 6, 0), [job, drawn], [*outputs, kill_row, drawn],
               api_visibility="private", show_progress="hidden")
    stop.click(friendly(lambda name: ask_cancel(ctx, name), 2, 1), job, [confirm_row, confirm_text],
               api_visibility="private")
    keep.click(lambda: gr.update(visible=False), None, confirm_row, api_visibility="private")
    confirm.click(lambda: gr.update(visible=False), None, confirm_row, api_visibility="private").then(
        friendly(lambda name: cancel(ctx, name), 4, 0), job, outputs, api_visibility="private")
    # The API's cancel is the confirmed one (a client has no dialog to answer).
    api_cancel = gr.Button(visible=False)
    api_cancel.click(friendly(lambda name: cancel(ctx, name), 4, 0), job, outputs, api_name="cancel_job")
    kill_now.click(friendly(lambda name: stop_now(ctx, name), 4, 0), job, outputs, api_name="stop_job")
    return refresh_fn
