"""Annotate: the store's queue one trace at a time; good / bad / unsure per stage (per option for Analyze),
corrected text, note, undo, skip, export. Keyboard: g / b / u give the next stage without a verdict that verdict,
Ctrl+Enter saves and moves on, Alt+S skips, Alt+Z undoes (see KEYS_JS)."""

from __future__ import annotations

import gradio as gr

from demo.widgets import friendly, question_markdown
from tinythinker.stages import ANALYZE, RECALL, SUMMARIZE, uses
from tinythinker.store.core import Store, StoredTrace
from tinythinker.workspace import check_name

VERDICTS = ["good", "bad", "unsure"]
MAX_OPTIONS = 8  # CSQA has 5, OBQA 4, StrategyQA 2; slots beyond a trace's options stay hidden
ANY, RIGHT, WRONG = "any", "right", "wrong"

KEYS_JS = """
<script>
(() => {
  const typing = (el) => el && (el.tagName === "TEXTAREA" ||
      (el.tagName === "INPUT" && !["radio", "checkbox"].includes(el.type)));
  const visible = (el) => el && el.offsetParent !== null;
  const click = (id) => { const b = document.getElementById(id); if (visible(b)) b.click(); };
  document.addEventListener("keydown", (e) => {
    const tab = document.getElementById("annotate-save");
    if (!visible(tab)) return;
    if (e.ctrlKey && e.key === "Enter") { e.preventDefault(); click("annotate-save"); return; }
    if (e.altKey && (e.key === "s" || e.key === "S")) { e.preventDefault(); click("annotate-skip"); return; }
    if (e.altKey && (e.key === "z" || e.key === "Z")) { e.preventDefault(); click("annotate-undo"); return; }
    if (typing(document.activeElement) || e.ctrlKey || e.altKey || e.metaKey) return;
    const verdict = {g: "good", b: "bad", u: "unsure"}[e.key];
    if (!verdict) return;
    const groups = [...document.querySelectorAll(".tt-verdict")].filter(visible);
    const open = groups.find((g) => !g.querySelector("input[type=radio]:checked"));
    const input = open && open.querySelector(`input[type=radio][value="${verdict}"]`);
    if (input) { e.preventDefault(); input.click(); }
  });
})();
</script>
"""


def _filters(model, iteration, correct, disagree_a, disagree_b) -> dict:
    f = {}
    if model:
        f["model"] = model
    if iteration not in (None, ""):
        f["iteration"] = int(iteration)
    if correct in (RIGHT, WRONG):
        f["correct"] = correct == RIGHT
    if disagree_a and disagree_b:
        f["disagree"] = (disagree_a, disagree_b)
    return f


def _empty_view(message: str) -> tuple:
    hidden = []
    for _ in range(MAX_OPTIONS):
        hidden += [gr.update(visible=False), "", None, ""]
    return (None, message, "", "", None, "", *hidden, "", None, "", "")


def render(stored: StoredTrace | None, message: str = "") -> tuple:
    """Every output of the tab for one stored trace (verdicts and corrections cleared)."""
    if stored is None:
        return _empty_view(message or "The queue is empty for these filters. 🎉")
    t = stored.trace
    verdict = "right" if t.correct else ("wrong" if t.correct is False else "unknown")
    header = (f"{message}\n\n" if message else "") + (
        f"**trace {stored.id}** · model `{stored.model}` · iteration {stored.iteration} · stage type "
        f"{t.stage_type} · predicted {t.predicted or 'invalid'} ({verdict})")
    has_recall = uses(t.stage_type, RECALL)
    slots = []
    labels = t.question.labels if uses(t.stage_type, ANALYZE) else []
    for i in range(MAX_OPTIONS):
        if i < len(labels):
            lab = labels[i]
            text = t.analyses.get(lab, "")
            slots += [gr.update(visible=lab in t.analyses), f"**{lab}** ({t.question.option_text(lab)}): {text}", None, ""]
        else:
            slots += [gr.update(visible=False), "", None, ""]
    return (stored.id, header, question_markdown(t.question),
            t.recall if has_recall else "(this stage type has no Recall)", None, "",
            *slots, t.summary, None, "", "")


def next_trace(ctx, annotator, model, iteration, correct, disagree_a, disagree_b, message=""):
    name = check_name(annotator, "annotator name")
    with Store(ctx.ws.db) as store:
        stored = store.next_unlabelled(annotator=name, **_filters(model, iteration, correct, disagree_a, disagree_b))
    return render(stored, message)


def save(ctx, trace_id, annotator, note, recall_verdict, recall_text, *rest):
    """Label every stage given a verdict (one transaction per label, as the store does), then show the next."""
    name = check_name(annotator, "annotator name")
    if trace_id in (None, ""):
        raise ValueError("no trace loaded: press Next")
    slots = rest[: 2 * MAX_OPTIONS]
    summary_verdict, summary_text, *filters = rest[2 * MAX_OPTIONS:]
    with Store(ctx.ws.db) as store:
        stored = store.get_trace(int(trace_id))
        labels = stored.trace.question.labels
        todo = []
        if recall_verdict or recall_text:
            todo.append((RECALL, None, recall_verdict, recall_text))
        for i in range(min(len(labels), MAX_OPTIONS)):
            verdict, text = slots[2 * i], slots[2 * i + 1]
            if verdict or text:
                todo.append((ANALYZE, labels[i], verdict, text))
        if summary_verdict or summary_text:
            todo.append((SUMMARIZE, None, summary_verdict, summary_text))
        if not todo:
            raise ValueError("give at least one stage a verdict (or press Skip)")
        for stage, option, verdict, _text in todo:
            if not verdict:
                where = f"{stage} option {option}" if option else stage
                raise ValueError(f"{where}: a corrected text needs a verdict too (good, bad or unsure)")
        for stage, option, verdict, text in todo:
            store.label(stored.id, stage, verdict, text=(text or "").strip() or None,
                        note=(note or "").strip() or None, annotator=name, option=option)
    return next_trace(ctx, name, *filters, message=f"saved {len(todo)} label(s) on trace {stored.id}")


def skip(ctx, trace_id, annotator, *filters):
    name = check_name(annotator, "annotator name")
    if trace_id not in (None, ""):
        with Store(ctx.ws.db) as store:
            store.skip(int(trace_id), name)
    return next_trace(ctx, name, *filters, message=f"skipped trace {trace_id}")


def undo(ctx, annotator):
    name = check_name(annotator, "annotator name")
    with Store(ctx.ws.db) as store:
        label = store.undo_last(name)
        if label is None:
            return render(None, f"{name} has no label to undo")
        stored = store.get_trace(label.trace_id)
    where = f"{label.stage} option {label.option}" if label.option else label.stage
    return render(stored, f"undid {name}'s {label.verdict!r} on {where} of trace {label.trace_id}")


def export(ctx, fmt, name, which):
    out = ctx.ws.annotations_dir / check_name(name, "export name")
    with Store(ctx.ws.db) as store:
        return store.export(out, fmt=fmt, pairs=which)


def stats(ctx):
    with Store(ctx.ws.db) as store:
        return store.stats()


def models(ctx) -> list[str]:
    if not ctx.ws.db.exists():
        return []
    with Store(ctx.ws.db) as store:
        return store.models()


def build(ctx, saved_name: gr.BrowserState):
    """`saved_name` (created at the top level, outside the lazily rendered tabs) remembers the annotator in the
    browser, so a page reload does not ask who is labelling again."""
    known = models(ctx)
    with gr.Row():
        annotator = gr.Textbox(label="annotator name", max_lines=1, elem_id="annotate-annotator")
        model = gr.Dropdown(["", *known], value="", allow_custom_value=True, label="model (blank = any)")
        iteration = gr.Textbox(label="iteration (blank = any)", max_lines=1)
        correct = gr.Radio([ANY, RIGHT, WRONG], value=ANY, label="answer")
    with gr.Accordion("only questions where two models disagree", open=False):
        with gr.Row():
            dis_a = gr.Dropdown(["", *known], value="", allow_custom_value=True, label="model A (name or name@iteration)")
            dis_b = gr.Dropdown(["", *known], value="", allow_custom_value=True, label="model B")
    gr.Markdown("Keys: **g / b / u** give the next stage without a verdict good / bad / unsure · "
                "**Ctrl+Enter** save and next · **Alt+S** skip · **Alt+Z** undo")
    with gr.Row():
        b_next = gr.Button("Next in queue", elem_id="annotate-next")
        b_skip = gr.Button("Skip (Alt+S)", elem_id="annotate-skip")
        b_undo = gr.Button("Undo my last label (Alt+Z)", elem_id="annotate-undo")
    trace_id = gr.Number(label="trace id", precision=0, interactive=False, elem_id="annotate-trace-id")
    header = gr.Markdown(elem_id="annotate-header")
    question = gr.Markdown()
    with gr.Group():
        recall = gr.Textbox(label="Recall", interactive=False, lines=2)
        with gr.Row():
            recall_v = gr.Radio(VERDICTS, label="Recall verdict", elem_classes="tt-verdict", elem_id="annotate-recall-v")
            recall_t = gr.Textbox(label="corrected Recall (optional)", lines=2)
    slot_outputs, slot_inputs = [], []
    with gr.Group():
        gr.Markdown("**Analyze**")
        for i in range(MAX_OPTIONS):
            with gr.Row(visible=False) as row:
                text = gr.Markdown()
                verdict = gr.Radio(VERDICTS, label="verdict", elem_classes="tt-verdict",
                                   elem_id=f"annotate-analyze-v{i}")
                corrected = gr.Textbox(label="corrected analysis (optional)", lines=1)
            slot_outputs += [row, text, verdict, corrected]
            slot_inputs += [verdict, corrected]
    with gr.Group():
        summary = gr.Textbox(label="Summarize", interactive=False)
        with gr.Row():
            summary_v = gr.Radio(VERDICTS, label="Summarize verdict", elem_classes="tt-verdict",
                                 elem_id="annotate-summary-v")
            summary_t = gr.Textbox(label="corrected Summarize (optional)", lines=1)
    note = gr.Textbox(label="note (optional, kept with each label)", lines=1)
    b_save = gr.Button("Save labels and next (Ctrl+Enter)", variant="primary", elem_id="annotate-save")
    with gr.Accordion("export and statistics", open=False):
        with gr.Row():
            fmt = gr.Radio(["jsonl", "hf"], value="jsonl", label="format")
            which = gr.Radio(["curated", "all"], value="curated", label="pairs")
            out_name = gr.Textbox("reflection-v1", label="export folder name (in annotations/)")
            b_export = gr.Button("Export")
            b_stats = gr.Button("Statistics")
        report = gr.JSON(label="result")

    # Events, all in one place.
    filters = [model, iteration, correct, dis_a, dis_b]
    outputs = [trace_id, header, question, recall, recall_v, recall_t, *slot_outputs, summary, summary_v, summary_t,
               note]
    b_next.click(friendly(lambda *a: next_trace(ctx, *a)), [annotator, *filters], outputs, api_name="annotate_next")
    b_save.click(friendly(lambda *a: save(ctx, *a)),
                 [trace_id, annotator, note, recall_v, recall_t, *slot_inputs, summary_v, summary_t, *filters],
                 outputs, api_name="annotate_save")
    b_skip.click(friendly(lambda *a: skip(ctx, *a)), [trace_id, annotator, *filters], outputs,
                 api_name="annotate_skip")
    b_undo.click(friendly(lambda a: undo(ctx, a)), annotator, outputs, api_name="annotate_undo")
    b_export.click(friendly(lambda *a: export(ctx, *a)), [fmt, out_name, which], report, api_name="annotate_export")
    b_stats.click(friendly(lambda: stats(ctx)), None, report, api_name="annotate_stats")
    annotator.change(lambda name: name, annotator, saved_name, api_visibility="private")
    return (lambda name: name or gr.skip()), saved_name, annotator  # the app's load event restores the name
