"""Annotate: the store's queue one trace at a time; good / bad / unsure per stage (per option for Analyze),
corrected text, note, undo, skip, export. Keyboard: g / b / u give the next stage without a verdict that verdict,
Ctrl+Enter saves and moves on, Alt+S skips, Alt+Z undoes (see KEYS_JS)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo import fill
from demo.widgets import friendly, question_markdown
from tinythinker import plots
from tinythinker.compare import word_diff
from tinythinker.pair_checks import check_pairs
from tinythinker.stages import ANALYZE, RECALL, STAGES, SUMMARIZE, uses
from tinythinker.store import agreement as agreement_mod
from tinythinker.store import downloads as downloads_mod
from tinythinker.store import guideline as guideline_mod
from tinythinker.store import pairwise as pairwise_mod
from tinythinker.store.core import Store, StoredTrace
from tinythinker.store.files import select_pairs
from tinythinker.store.settings import get_overlap, set_overlap
from tinythinker.workspace import check_name

VERDICTS = ["good", "bad", "unsure"]
MAX_OPTIONS = 8  # CSQA has 5, OBQA 4, StrategyQA 2; slots beyond a trace's options stay hidden
ANY, RIGHT, WRONG = "any", "right", "wrong"
EMPTY_QUEUE = ("The queue is empty for these filters: every trace that matches them is labelled or skipped. "
               "Change the filters, or fill the queue: **Fill the queue** above generates traces with a model "
               "(a job) or imports a traces JSONL (from `python -m tinythinker evaluate --out FILE`).")
EMPTY_STORE = ("The store has no traces yet, so there is nothing to label. Fill the queue: **Fill the queue** "
               "above generates traces with a model (a job) or imports a traces JSONL (from "
               "`python -m tinythinker evaluate --out FILE`, or `python -m tinythinker store import FILE`).")

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


# Pairwise mode: 1 / 2 / = / s press the first-better / second-better / tie / skip buttons while the pairwise
# panel is open and no text field has the focus.
PAIR_KEYS_JS = """
<script>
(() => {
  const typing = (el) => el && (el.tagName === "TEXTAREA" ||
      (el.tagName === "INPUT" && !["radio", "checkbox"].includes(el.type)));
  const visible = (el) => el && el.offsetParent !== null;
  const keys = {"1": "annotate-pair-first", "2": "annotate-pair-second", "=": "annotate-pair-tie",
                "s": "annotate-pair-skip"};
  document.addEventListener("keydown", (e) => {
    const id = keys[e.key];
    if (!id || e.ctrlKey || e.altKey || e.metaKey || typing(document.activeElement)) return;
    const b = document.getElementById(id);
    if (!visible(b)) return;
    e.preventDefault();
    b.click();
  });
})();
</script>
"""
PAIR_HEADERS = ["check", "value", "threshold", "ok", "n", "note"]
AGREEMENT_HEADERS = ["stage", "annotators", "items", "method", "kappa", "agreement", "reading"]
DISAGREE_HEADERS = ["trace_id", "question_id", "stage", "option", "verdicts"]


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
        return _empty_view(message or EMPTY_QUEUE)
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
        # The overlap setting: how many annotators label a trace before it leaves the queue.
        stored = store.next_unlabelled(annotator=name, overlap=get_overlap(store),
                                       **_filters(model, iteration, correct, disagree_a, disagree_b))
        if stored is None:
            message = (f"{message}\n\n" if message else "") + (EMPTY_STORE if not store.count_traces() else EMPTY_QUEUE)
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
    """Undo the annotator's last save: every label of it (a save labels one trace, one label per stage), walking
    back labels in force while they are on the same trace, then show that trace again."""
    name = check_name(annotator, "annotator name")
    with Store(ctx.ws.db) as store:
        label = store.undo_last(name)
        if label is None:
            return render(None, f"{name} has no label to undo")
        undone = [label]
        while True:
            latest = next(iter(store.labels(annotator=name)[-1:]), None)
            if latest is None or latest.trace_id != label.trace_id:
                break
            undone.append(store.undo_last(name))
        stored = store.get_trace(label.trace_id)
    where = ", ".join(f"{u.stage} option {u.option}" if u.option else u.stage for u in reversed(undone))
    return render(stored, f"undid {name}'s last save on trace {label.trace_id}: {len(undone)} label(s) ({where})")


def export(ctx, fmt, name, which):
    """Export into the folder beside the database (the field's label names it) and offer it as one zip."""
    import shutil
    import tempfile

    out = ctx.ws.annotations_dir / check_name(name, "export name")
    with Store(ctx.ws.db) as store:
        manifest = store.export(out, fmt=fmt, pairs=which)
    zipped = shutil.make_archive(str(Path(tempfile.mkdtemp(prefix="tinythinker-export-")) / out.name), "zip",
                                 root_dir=out)
    return {**manifest, "folder": str(out)}, zipped


def push(ctx, name, repo_id):
    """Push the export folder `name` (exported in the hf format) to the Hub; offline, the message says so and that
    the local export is complete (tinythinker.store.hub)."""
    from tinythinker.store.hub import push_export

    out = ctx.ws.annotations_dir / check_name(name, "export name")
    return {"pushed": push_export(out, repo_id), "folder": str(out)}


def stats(ctx):
    with Store(ctx.ws.db) as store:
        out = store.stats()
        out["overlap"] = get_overlap(store)
        out["agreement"] = [{k: r[k] for k in (*AGREEMENT_HEADERS, "pairwise")}
                            for r in agreement_mod.agreement_by_stage(store)]
        out["disagreements"] = len(agreement_mod.disagreements(store))
        out["pairwise"] = pairwise_mod.pairwise_agreement(store)
        return out


def agreement(ctx):
    """Kappa per stage (table and chart) and the items the annotators disagree on."""
    with Store(ctx.ws.db) as store:
        rows = agreement_mod.agreement_by_stage(store)
        dis = agreement_mod.disagreements(store)
    table = [[r["stage"], ", ".join(r["annotators"]), r["items"], r["method"] or "",
              None if r["kappa"] is None else round(r["kappa"], 3),
              None if r["agreement"] is None else round(r["agreement"], 3), r["reading"]] for r in rows]
    dis_rows = [[d["trace_id"], d["question_id"], d["stage"], d["option"] or "", d["summary"]] for d in dis]
    return table, dis_rows, plots.agreement_by_stage(rows)


def save_overlap(ctx, overlap, annotator):
    with Store(ctx.ws.db) as store:
        n = set_overlap(store, overlap, by=(annotator or "").strip() or None)
    return f"overlap set to {n}: a trace stays in the queue until {n} annotator(s) have labelled it"


def current_guideline(ctx) -> dict:
    """The guideline in force; the default without opening (creating) the database when there is none yet."""
    if not ctx.ws.db.exists():
        return {"text": guideline_mod.DEFAULT_GUIDELINE, "author": None, "created_at": None, "version": 0}
    with Store(ctx.ws.db) as store:
        return guideline_mod.guideline(store)


def _guideline_md(g) -> str:
    by = f"\n\n<sub>version {g['version']} by {g['author']} · {g['created_at']}</sub>" if g["version"] else ""
    return g["text"] + by


def save_guideline(ctx, text, annotator):
    name = check_name(annotator, "annotator name")
    with Store(ctx.ws.db) as store:
        g = guideline_mod.set_guideline(store, text, name)
    return _guideline_md(g), g["text"]


def pair_check_table(ctx, which):
    """The pair checks (tinythinker.pair_checks) on the pairs an export would write, as a table and a chart."""
    with Store(ctx.ws.db) as store:
        report = check_pairs(select_pairs(store, which or "curated"), store=store)
    table = [[r[h] if not isinstance(r[h], float) else round(r[h], 4) for h in PAIR_HEADERS] for r in report.table]
    return report.message(), table, plots.pair_checks(report.table)


def download_files(ctx, which):
    """Traces (with label history), labels and pairs as three JSONL files, for the download buttons."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="tinythinker-annotations-")
    with Store(ctx.ws.db) as store:
        return tuple(str(downloads_mod.download(store, kind, folder, which or "curated"))
                     for kind in downloads_mod.KINDS)


def _side_md(stored) -> str:
    p = pairwise_mod.side_provenance(stored)
    return (f"trace {p['trace_id']} · model `{p['model']}` · iteration {p['iteration']} · checkpoint "
            f"`{p['checkpoint']}` · sample {p['sample_index'] if p['sample_index'] is not None else '-'}")


def render_pair(item, message: str = "") -> tuple:
    if item is None:
        return (None, None, "", (message + "\n\n" if message else "") + "No pair left to compare for these "
                "models and this stage.", "", [], [], "", "")
    where = f"{item.stage}" + (f" option {item.option}" if item.option else "")
    header = (f"{message}\n\n" if message else "") + f"**{where}**: which text is better for this input?"
    left, right = word_diff(item.first_text, item.second_text)
    return (item.first.id, item.second.id, item.option or "", header, question_markdown(item.first.trace.question),
            left, right, _side_md(item.first), _side_md(item.second))


def pair_next(ctx, annotator, model_a, model_b, stage, message=""):
    name = check_name(annotator, "annotator name")
    if not model_a:
        raise ValueError("pairwise: pick model A (and B to compare two models, or leave B blank for two samples)")
    with Store(ctx.ws.db) as store:
        item = pairwise_mod.next_pair(store, name, model_a, model_b or None, stage or RECALL)
    return render_pair(item, message)


def pair_choose(ctx, choice, annotator, first_id, second_id, stage, option, model_a, model_b):
    name = check_name(annotator, "annotator name")
    if first_id in (None, "") or second_id in (None, ""):
        raise ValueError("no pair loaded: press Next pair")
    with Store(ctx.ws.db) as store:
        pairwise_mod.choose(store, int(first_id), int(second_id), stage or RECALL, choice, name,
                            option=option or None)
    return pair_next(ctx, name, model_a, model_b, stage,
                     message=f"saved {pairwise_mod.CHOICES[choice]} on traces {int(first_id)} / {int(second_id)}")


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
    fill_refresh = fill.build(ctx)  # generate traces (a job) or upload a traces JSONL
    gr.Markdown("Keys: **g / b / u** give the next stage without a verdict good / bad / unsure · "
                "**Ctrl+Enter** save and next · **Alt+S** skip · **Alt+Z** undo (the whole last save)")
    with gr.Row():
        b_next = gr.Button("Next in queue", elem_id="annotate-next")
        b_skip = gr.Button("Skip (Alt+S)", elem_id="annotate-skip")
        b_undo = gr.Button("Undo my last label (Alt+Z)", elem_id="annotate-undo")
    trace_id = gr.Number(label="trace id", precision=0, interactive=False, elem_id="annotate-trace-id")
    with gr.Row():
        with gr.Column(scale=3):
            header = gr.Markdown(elem_id="annotate-header")
            question = gr.Markdown()
        with gr.Column(scale=2):
            current = current_guideline(ctx)
            guide = gr.Markdown(_guideline_md(current), elem_id="annotate-guideline")
            with gr.Accordion("edit the guideline", open=False):
                guide_text = gr.Textbox(current["text"], lines=8,
                                        label="guideline (markdown, stored in the database)",
                                        elem_id="annotate-guideline-text")
                b_guide = gr.Button("Save guideline", elem_id="annotate-guideline-save")
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
            out_name = gr.Textbox("reflection-v1", label=f"export folder name (in {ctx.ws.annotations_dir})",
                                  elem_id="annotate-export-name")
            b_export = gr.Button("Export", elem_id="annotate-export")
            b_stats = gr.Button("Statistics")
            export_dl = gr.DownloadButton("Download the export (zip)", elem_id="annotate-export-download")
        with gr.Row():
            hub_repo = gr.Textbox(label="Hugging Face dataset repository (user/name) for an hf-format export",
                                  placeholder="user/tinythinker-pairs", elem_id="annotate-hub-repo")
            b_push = gr.Button("Push the export to the Hub", elem_id="annotate-hub-push")
        report = gr.JSON(label="result")
    with gr.Accordion("pairwise: which of two texts is better (keys 1 / 2 / = / s)", open=False):
        with gr.Row():
            pair_a = gr.Dropdown(["", *known], value="", allow_custom_value=True,
                                 label="model A (name or name@iteration)", elem_id="annotate-pair-a")
            pair_b = gr.Dropdown(["", *known], value="", allow_custom_value=True,
                                 label="model B (blank = two samples of A)", elem_id="annotate-pair-b")
            pair_stage = gr.Radio(list(STAGES), value=RECALL, label="stage", elem_id="annotate-pair-stage")
            b_pair_next = gr.Button("Next pair", elem_id="annotate-pair-next")
        pair_header = gr.Markdown(elem_id="annotate-pair-header")
        pair_question = gr.Markdown()
        with gr.Row():
            pair_first = gr.HighlightedText(label="1 · first", color_map={"-": "#fff3e0", "+": "#e3f2fd"},
                                            show_legend=False, elem_id="annotate-pair-first-text")
            pair_second = gr.HighlightedText(label="2 · second", color_map={"-": "#fff3e0", "+": "#e3f2fd"},
                                             show_legend=False, elem_id="annotate-pair-second-text")
        with gr.Row():
            b_first = gr.Button("1 · first is better", elem_id="annotate-pair-first")
            b_second = gr.Button("2 · second is better", elem_id="annotate-pair-second")
            b_tie = gr.Button("= · tie", elem_id="annotate-pair-tie")
            b_pskip = gr.Button("s · skip", elem_id="annotate-pair-skip")
        with gr.Accordion("who wrote them (model, iteration, checkpoint, sample)", open=False):
            with gr.Row():
                pair_first_info, pair_second_info = gr.Markdown(), gr.Markdown()
            with gr.Row():
                pair_first_id = gr.Number(label="first trace", precision=0, interactive=False)
                pair_second_id = gr.Number(label="second trace", precision=0, interactive=False)
                pair_option = gr.Textbox(label="option (analyze)", interactive=False, max_lines=1)
    with gr.Accordion("several annotators, pair checks, downloads", open=False):
        with gr.Row():
            overlap = gr.Number(1, precision=0, minimum=1, maximum=20, elem_id="annotate-overlap",
                                label="overlap: annotators per trace before it leaves the queue")
            b_overlap = gr.Button("Save overlap", scale=0)
            b_agree = gr.Button("Agreement (kappa per stage)", elem_id="annotate-agreement")
        overlap_msg = gr.Markdown()
        agree_chart = gr.Plot()
        agree_table = gr.Dataframe(headers=AGREEMENT_HEADERS, interactive=False, label="agreement by stage")
        disagree_table = gr.Dataframe(headers=DISAGREE_HEADERS, interactive=False, wrap=True,
                                      label="items the annotators disagree on")
        with gr.Row():
            check_which = gr.Radio(["curated", "all"], value="curated", label="pairs to check and download")
            b_checks = gr.Button("Check pairs", elem_id="annotate-pair-checks")
        checks_msg = gr.Markdown()
        checks_chart = gr.Plot()
        checks_table = gr.Dataframe(headers=PAIR_HEADERS, interactive=False, wrap=True, label="pair checks")
        with gr.Row():
            b_prepare = gr.Button("Prepare downloads", elem_id="annotate-prepare-downloads")
            dl_traces = gr.DownloadButton("traces.jsonl", elem_id="annotate-dl-traces")
            dl_labels = gr.DownloadButton("labels.jsonl", elem_id="annotate-dl-labels")
            dl_pairs = gr.DownloadButton("pairs.jsonl", elem_id="annotate-dl-pairs")

    # Events, all in one place.
    filters = [model, iteration, correct, dis_a, dis_b]
    outputs = [trace_id, header, question, recall, recall_v, recall_t, *slot_outputs, summary, summary_v, summary_t,
               note]
    # Errors of the queue's buttons go to the header above the trace (output 1), once; the form stays usable.
    n_out = len(outputs)
    b_next.click(friendly(lambda *a: next_trace(ctx, *a), n_out, 1), [annotator, *filters], outputs,
                 api_name="annotate_next")
    b_save.click(friendly(lambda *a: save(ctx, *a), n_out, 1),
                 [trace_id, annotator, note, recall_v, recall_t, *slot_inputs, summary_v, summary_t, *filters],
                 outputs, api_name="annotate_save")
    b_skip.click(friendly(lambda *a: skip(ctx, *a), n_out, 1), [trace_id, annotator, *filters], outputs,
                 api_name="annotate_skip")
    b_undo.click(friendly(lambda a: undo(ctx, a), n_out, 1), annotator, outputs, api_name="annotate_undo")
    b_export.click(friendly(lambda *a: export(ctx, *a), 2, 0, as_json=True), [fmt, out_name, which], [report, export_dl],
                   api_name="annotate_export")
    b_push.click(friendly(lambda *a: push(ctx, *a), 1, 0, as_json=True), [out_name, hub_repo], report,
                 api_name="annotate_push")
    b_stats.click(friendly(lambda: stats(ctx)), None, report, api_name="annotate_stats")
    annotator.change(lambda name: name, annotator, saved_name, api_visibility="private")
    b_guide.click(friendly(lambda *a: save_guideline(ctx, *a)), [guide_text, annotator], [guide, guide_text],
                  api_name="annotate_guideline")
    b_overlap.click(friendly(lambda *a: save_overlap(ctx, *a)), [overlap, annotator], overlap_msg,
                    api_name="annotate_overlap")
    b_agree.click(friendly(lambda: agreement(ctx)), None, [agree_table, disagree_table, agree_chart],
                  api_name="annotate_agreement")
    b_checks.click(friendly(lambda w: pair_check_table(ctx, w)), check_which, [checks_msg, checks_table, checks_chart],
                   api_name="annotate_pair_checks")
    b_prepare.click(friendly(lambda w: download_files(ctx, w)), check_which, [dl_traces, dl_labels, dl_pairs],
                    api_name="annotate_downloads")
    pair_outputs = [pair_first_id, pair_second_id, pair_option, pair_header, pair_question, pair_first, pair_second,
                    pair_first_info, pair_second_info]
    b_pair_next.click(friendly(lambda *a: pair_next(ctx, *a)), [annotator, pair_a, pair_b, pair_stage], pair_outputs,
                      api_name="annotate_pair_next")
    pair_inputs = [annotator, pair_first_id, pair_second_id, pair_stage, pair_option, pair_a, pair_b]

    def chooser(key):
        return friendly(lambda *a: pair_choose(ctx, key, *a))

    for button, key, name in ((b_first, pairwise_mod.FIRST, "first"), (b_second, pairwise_mod.SECOND, "second"),
                              (b_tie, pairwise_mod.TIE, "tie"), (b_pskip, pairwise_mod.SKIP, "skip")):
        button.click(chooser(key), pair_inputs, pair_outputs, api_name=f"annotate_pair_{name}")
    model_lists = [model, dis_a, dis_b, pair_a, pair_b]

    def refresh_models(*current):
        """Fresh model names from the store (page load, a job's end), each pick kept."""
        names = ["", *models(ctx)]
        return tuple(gr.update(choices=names, value=c if c in names else "") for c in current)

    refresh = [(refresh_models, model_lists, model_lists), fill_refresh]
    # the app's load event restores the name; `refresh` keeps the model lists fresh
    return ((lambda name: name or gr.skip()), saved_name, annotator), refresh
