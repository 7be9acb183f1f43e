"""Fill the Annotate queue from the browser: a traces job (models, split, how many questions, greedy or k
samples per question) that imports what it writes into the store, or the upload of a traces JSONL."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo.widgets import SPLITS, friendly
from tinythinker import jobs
from tinythinker.jobs import BENCHMARKS, GenerateSettings
from tinythinker.store import Store

KIND = "traces"
INTRO = ("Traces are what Annotate labels: a model's Recall, Analyze and Summarize on a question. **Generate** "
         "runs each chosen model on the first N questions of a split as a job (follow it here or in the Train tab; "
         "each model runs with the stage type and answer mode it was trained with) and files the traces in the "
         "store under the model's name. Greedy gives one trace per question; k samples give k (what phase 2's "
         "pairs come from). Or **upload** a traces JSONL (`python -m tinythinker evaluate --out FILE` writes one).")


def start_generate(ctx, models, benchmark, split, limit, samples, temperature):
    """Start the traces job; returns (its name for the status timer, the status line)."""
    if isinstance(models, str):
        models = [models]
    settings = GenerateSettings(models=list(models or []), data=benchmark, split=split, limit=limit,
                                samples=samples, temperature=temperature)
    argv = jobs.generate_args(settings, ctx.ws, ctx.shipped())
    estimate = jobs.check_memory(argv, ctx.ws)
    name = Path(argv[argv.index("--out-dir") + 1]).name
    job = jobs.start(argv, ctx.ws.run_dir(name, "job name"), kind=KIND,
                     memory_estimate=estimate.need if estimate else None)
    return job.name, (f"Started traces job **{job.name}** ({len(settings.models)} model(s), first {int(limit)} "
                      f"{benchmark} {split} questions, {int(samples)} per question). It files them in the store "
                      "when done; then press **Next in queue**.")


def job_line(ctx, name) -> str:
    if not name:
        return gr.skip()
    job = jobs.load_job(ctx.ws.run_dir(name, "job name"))
    if job is None:
        return f"no job {name!r}"
    st = jobs.status(job)
    done = [row for row in jobs.log_tail(job, 200).split("\n") if row.startswith("imported ")]
    pct = "" if st.fraction is None or st.state != jobs.RUNNING else f" · {round(100 * st.fraction)}%"
    text = f"Traces job **{job.name}**: {st.text}{pct}"
    if done:
        text += " · " + "; ".join(done)
    if st.state == jobs.FINISHED:
        text += ". Press **Next in queue**."
    return text


def tick(ctx, name, drawn):
    """Redraw the job's line while it runs, and once more after it has ended (`drawn`: the ended job last drawn,
    however late the timer fires)."""
    job = jobs.load_job(ctx.ws.run_dir(name, "job name")) if name else None
    if job is None:
        return gr.skip()
    jobs.refresh(job)
    ended = f"{job.name}:{job.finished}" if job.finished is not None else ""
    if ended and ended == drawn:
        return gr.skip()
    return job_line(ctx, name), ended


def import_upload(ctx, path, model):
    """A traces JSONL uploaded in the browser, into the store (under `model`, else each trace's own)."""
    if not path:
        raise ValueError("upload: choose a traces JSONL file first")
    name = (model or "").strip() or None
    with Store(ctx.ws.db) as store:
        ids = store.import_file(path, model=name)
    return (f"Imported {len(ids)} trace(s) from {Path(path).name}" + (f" as model `{name}`" if name else "")
            + ". Press **Next in queue**.")


def build(ctx):
    """The accordion (open while the store is empty); returns (refresh fn, inputs, outputs) for the model list."""
    empty = True
    if ctx.ws.db.exists():
        with Store(ctx.ws.db) as store:
            empty = store.count_traces() == 0
    choices = ctx.checkpoint_choices()
    with gr.Accordion("Fill the queue: generate traces, or upload a traces file", open=empty,
                      elem_id="annotate-fill"):
        gr.Markdown(INTRO)
        with gr.Row():
            models = gr.Dropdown(choices, value=[ctx.default_checkpoint()], multiselect=True, allow_custom_value=True,
                                 label="models", elem_id="fill-models", scale=3)
            benchmark = gr.Dropdown(list(BENCHMARKS), value="csqa", label="benchmark")
            split = gr.Dropdown(list(SPLITS), value="validation", label="split")
            limit = gr.Number(10, precision=0, minimum=1, label="questions (the first N)", elem_id="fill-limit")
            samples = gr.Number(1, precision=0, minimum=1, maximum=50,
                                label="traces per question (1 = greedy, k = k samples)", elem_id="fill-samples")
            temperature = gr.Number(0.7, minimum=0.05, maximum=5.0, label="temperature (samples)")
        go = gr.Button("Generate traces", variant="primary", elem_id="fill-generate")
        with gr.Row():
            upload = gr.File(label="traces JSONL", file_types=[".jsonl"], type="filepath", elem_id="fill-upload")
            upload_model = gr.Textbox(label="model name for the file (blank = each trace's own 'model' field)",
                                      max_lines=1, elem_id="fill-upload-model")
            b_import = gr.Button("Import the file", elem_id="fill-import", scale=0)
        status = gr.Markdown(elem_id="fill-status")
    running = gr.State("")
    timer = gr.Timer(2.0)

    # Events. Errors go to the status line, once.
    go.click(friendly(lambda *a: start_generate(ctx, *a), 2, 1), [models, benchmark, split, limit, samples,
                                                                   temperature], [running, status],
             api_name="annotate_generate")
    drawn = gr.State("")
    timer.tick(friendly(lambda n, d: tick(ctx, n, d), 2, 0), [running, drawn], [status, drawn],
               api_visibility="private", show_progress="hidden")
    b_import.click(friendly(lambda *a: import_upload(ctx, *a), 1, 0), [upload, upload_model], status,
                   api_name="annotate_upload")

    def refresh(current):
        fresh = ctx.checkpoint_choices()
        values = {v for _, v in fresh}
        kept = [c for c in (current or []) if c in values]
        return gr.update(choices=fresh, value=kept or [ctx.default_checkpoint()])

    return refresh, models, models
