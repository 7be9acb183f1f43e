"""The app at first use (issue 14) and with shipped students (issue 11, part 4), through gradio_client against
launched apps: one with a fake shipped-models folder, one without benchmark data, one with an empty store."""

import json
import time

import pytest
from gradio_client import Client, handle_file
from shipped_helpers import N_TRACES, write_shipped

from demo import compare, explore, step
from demo.context import AppContext
from demo.widgets import friendly, make_sampling
from tinythinker import jobs
from tinythinker.data import MissingDataError, hub, load_questions
from tinythinker.pipeline import read_traces, run_pipeline, write_traces
from tinythinker.shipped import cached_questions, import_shipped_traces, list_shipped
from tinythinker.store import Store
from tinythinker.students import load_student

STEP = dict(source="benchmark", benchmark="csqa", split="validation", index=0, stem="", options="", answer="",
            do_sample=False, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=24, seed=0, restrict="free",
            recall="", analyses_table={"headers": ["option", "text", "analysis"], "data": []}, timings=None)


def _step(client, action, checkpoint, stage_type="recall_analyze_summarize", **over):
    kw = {**STEP, **over}
    return client.predict(checkpoint, stage_type, *kw.values(), api_name=f"/step_{action}")


@pytest.fixture(scope="module")
def shipped_root(tmp_path_factory, data_dir):
    return write_shipped(tmp_path_factory.mktemp("shipped"), data_dir)


@pytest.fixture(scope="module")
def shipped_app(tmp_path_factory, shipped_root, data_dir):
    from test_app import launched_app

    root = shipped_root
    with launched_app(tmp_path_factory.mktemp("ws"), data_dir, shipped_root=root) as (ctx, url):
        yield ctx, Client(url, verbose=False), root


@pytest.fixture(scope="module")
def empty_app(tmp_path_factory, data_dir):
    from test_app import launched_app

    with launched_app(tmp_path_factory.mktemp("ws"), data_dir, traces=False) as (ctx, url):
        yield ctx, Client(url, verbose=False)


# -- shipped students (issue 11, part 4) ---------------------------------------------------------------------

def test_shipped_models_are_listed_with_their_roles_and_settings(shipped_app):
    ctx, client, root = shipped_app
    models = list_shipped(root)
    assert [(m.name, m.role, m.parent) for m in models] == [("tt-phase1", "phase1", None),
                                                            ("tt-reflected", "reflected", "tt-phase1"),
                                                            ("tt-answer-only", "baseline", None)]
    assert all(m.has_traces and m.restrict_answer == "constrain" for m in models)
    panel = client.predict(api_name="/start_panel")
    panel = panel[0] if isinstance(panel, tuple | list) else panel
    assert "Ready to explore" in panel and "tt-phase1" in panel and "tt-reflected" in panel
    assert "quick run" in panel.lower()  # still offered, as an option
    assert "`tt-answer-only` is the answer-only twin" in panel
    values = [v for _, v in ctx.checkpoint_choices()]
    assert {"tt-phase1", "tt-reflected", "tt-answer-only"} <= set(values)
    # Compare preselects phase 1 against its reflected successor.
    assert ctx.default_pair() == ("tt-phase1", "tt-reflected")
    # Step through follows the shipped model's answer mode (item 6).
    stage_type, restrict, note = client.predict("tt-reflected", api_name="/step_model")
    assert (stage_type, restrict) == ("recall_analyze_summarize", "constrain") and "tt-reflected" in note


def test_step_through_runs_a_shipped_student(shipped_app, data_dir):
    ctx, client, root = shipped_app
    # the pipeline's own token budgets (max new tokens 0), as the cached traces were made
    _, recall, _, summary, verdict, _, note = _step(client, "all", "tt-phase1", restrict="constrain",
                                                    max_new_tokens=0)
    expected = read_traces(root / "tt-phase1" / "traces" / "validation.jsonl")[0]
    assert (recall, summary) == (expected.recall, expected.summary) and "Prediction" in verdict
    assert "Error" not in note


def test_compare_uses_the_shipped_cached_traces(shipped_app):
    ctx, client, root = shipped_app
    # The split comparison is preset to the questions both cached trace files cover.
    assert compare.covered_questions(ctx, "tt-phase1", "tt-reflected") == N_TRACES
    assert compare.covered_questions(ctx, "tiny-a/best", "tt-reflected") == 0
    loads = ctx.students.loads
    summary, table, _ = client.predict("tt-phase1", "tt-reflected", "csqa", "validation", N_TRACES,
                                       "all disagreements", "each model's own", api_name="/compare_split")
    assert ctx.students.loads == loads  # no model run: the cached validation traces
    cached = {m.name: read_traces(m.traces_path) for m in list_shipped(root)}
    acc = {n: sum(bool(t.correct) for t in ts) / len(ts) for n, ts in cached.items()}
    assert f"{N_TRACES} questions" in summary
    assert f"{acc['tt-phase1']:.1%}" in summary and f"{acc['tt-reflected']:.1%}" in summary
    # The answer-only baseline against the staged student: its cached traces have no Recall or Analyze.
    assert compare.covered_questions(ctx, "tt-answer-only", "tt-phase1") == N_TRACES
    summary, table, _ = client.predict("tt-answer-only", "tt-phase1", "csqa", "validation", N_TRACES,
                                       "all disagreements", "each model's own", api_name="/compare_split")
    assert ctx.students.loads == loads
    assert f"{acc['tt-answer-only']:.1%}" in summary and f"{acc['tt-phase1']:.1%}" in summary


def test_results_show_the_shipped_models(shipped_app):
    ctx, client, root = shipped_app
    rows, chart, baseline_chart, cards, _ = client.predict(api_name="/results_shipped")
    by_name = {r[0]: r for r in rows["data"]}
    assert set(by_name) == {"tt-phase1", "tt-reflected", "tt-answer-only"}
    assert by_name["tt-answer-only"][1] == "answer-only baseline" and by_name["tt-answer-only"][4] == "summarize"
    assert by_name["tt-reflected"][2] == "tt-phase1" and by_name["tt-phase1"][7] == N_TRACES
    traces = read_traces(root / "tt-phase1" / "traces" / "validation.jsonl")
    assert by_name["tt-phase1"][8] == round(sum(bool(t.correct) for t in traces) / len(traces), 4)
    assert "tiny random student" in cards
    figure = json.loads(chart["plot"])
    assert figure["layout"]["title"]["text"] == "tt-phase1 -> tt-reflected"
    assert baseline_chart["visible"] is True  # shown only where a baseline ships: an update, value inside
    baseline_figure = json.loads(baseline_chart["value"]["plot"])
    assert baseline_figure["layout"]["title"]["text"] == "tt-answer-only -> tt-phase1"
    answer_only = read_traces(root / "tt-answer-only" / "traces" / "validation.jsonl")
    bars = dict(zip(baseline_figure["data"][0]["x"], baseline_figure["data"][0]["y"], strict=True))
    assert bars["both right"] == sum(bool(a.correct and b.correct) for a, b in zip(answer_only, traces, strict=True))
    assert sum(bars.values()) == N_TRACES


def test_shipped_traces_are_in_the_annotate_queue_once(shipped_app):
    ctx, client, root = shipped_app
    with Store(ctx.ws.db) as store:
        counts = {r["model"]: r["traces"] for r in store.stats()["by_model_iteration"]}
    assert counts["tt-phase1"] == N_TRACES and counts["tt-reflected"] == N_TRACES
    assert "tt-answer-only" not in counts  # a baseline has no rationale to curate
    assert import_shipped_traces(ctx.ws.db, list_shipped(root)) == {"tt-phase1": 0, "tt-reflected": 0}
    with Store(ctx.ws.db) as store:  # a second start adds nothing
        assert {r["model"]: r["traces"] for r in store.stats()["by_model_iteration"]} == counts
    out = client.predict("ann", "tt-reflected", "", "any", "", "", api_name="/annotate_next")
    assert out[0] is not None and "tt-reflected" in out[1]


def test_list_shipped_tolerates_missing_empty_and_broken_folders(tmp_path):
    assert list_shipped(tmp_path / "missing") == []
    assert list_shipped(tmp_path) == []
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "shipped.json").write_text("{not json")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "shipped.json").write_text(json.dumps({"name": "odd", "role": "teacher"}))
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "shipped.json").write_text(json.dumps({"name": "ok", "role": "phase1", "restrict_answer": False}))
    models = list_shipped(tmp_path)
    assert [m.name for m in models] == ["ok"] and models[0].restrict_answer == "free" and not models[0].has_traces


def test_env_overrides_the_shipped_root(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "shipped.json").write_text(json.dumps({"name": "m", "role": "reflected", "parent": "p"}))
    monkeypatch.setenv("TINYTHINKER_SHIPPED_DIR", str(tmp_path))
    assert [(m.name, m.iteration) for m in list_shipped()] == [("m", 1)]


# -- first use without data: the questions cached with the shipped students (issue 14) ----------------------------

def _fake_shipped(root, name, questions, **fields):
    """A shipped folder holding only what cached_questions reads: shipped.json and traces of `questions`."""
    folder = root / name
    (folder / "traces").mkdir(parents=True)
    (folder / "shipped.json").write_text(json.dumps({"name": name, "role": "phase1", **fields}))
    lines = [json.dumps({"question": q.to_dict(), "summary": "", "predicted": None}) for q in questions]
    (folder / "traces" / "validation.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_cached_questions_are_the_longest_cached_list_in_order(tmp_path, data_dir):
    val = load_questions("csqa", "validation", data_dir=data_dir, limit=5)
    _fake_shipped(tmp_path, "short", val[:3], data="csqa", split="validation")
    _fake_shipped(tmp_path, "long", val, data="csqa", split="validation")
    _fake_shipped(tmp_path, "other-split", val[::-1] * 2, data="csqa", split="train")
    _fake_shipped(tmp_path, "other-data", val[::-1] * 2, data="obqa", split="validation")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "shipped.json").write_text(json.dumps({"name": "broken", "role": "phase1"}))
    (tmp_path / "broken" / "traces").mkdir()
    (tmp_path / "broken" / "traces" / "validation.jsonl").write_text("{not a trace\n")
    got = cached_questions("csqa", "validation", tmp_path)
    assert got == val  # whole Question objects, gold answers included, in split order
    assert all(q.answer for q in got)
    # None cached for these: [] (the app then shows the data error).
    assert cached_questions("csqa", "test", tmp_path) == []
    assert cached_questions("strategyqa", "validation", tmp_path) == []
    assert cached_questions("csqa", "validation", tmp_path / "missing") == []
    # Without `data` in shipped.json, the questions' own source decides.
    _fake_shipped(tmp_path / "plain", "plain", val[:2])
    assert cached_questions("csqa", "validation", tmp_path / "plain") == val[:2]
    assert cached_questions("obqa", "validation", tmp_path / "plain") == []


@pytest.fixture()
def no_data_ctx(tmp_path, monkeypatch, shipped_root):
    """The app's context as `python app.py` gives it on an offline machine: no data folder, the hub unreachable
    (stood in for: importing `datasets` takes half a minute here), the fake shipped students."""
    from test_app import make_workspace

    def offline(name, part, local_file):
        raise MissingDataError(f"could not load {name} from the Hugging Face hub (offline)")

    monkeypatch.delenv("TINYTHINKER_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./data either
    monkeypatch.setattr(hub, "hub_rows", offline)
    return AppContext(ws=make_workspace(tmp_path / "ws", None, runs=False), shipped_root=shipped_root)


def test_without_data_step_through_shows_the_cached_questions(no_data_ctx, shipped_root):
    ctx = no_data_ctx
    cached = read_traces(shipped_root / "tt-phase1" / "traces" / "validation.jsonl")
    picked = ("benchmark", "csqa", "validation")
    shown = step.show_question(ctx, *picked, 0, "", "", "")[0]
    first = cached[0].question
    # question #0, with its gold answer
    assert first.stem in shown and f"**({first.answer})** {first.option_text(first.answer)}  (answer)" in shown
    assert (f"no data folder: these are the {N_TRACES} CSQA validation questions cached with the shipped "
            "students; start with --data-dir DIR (or set TINYTHINKER_DATA_DIR) for the whole split") in shown
    assert cached[N_TRACES - 1].question.stem in step.show_question(ctx, *picked, N_TRACES - 1, "", "", "")[0]
    # Beyond the cached questions: how many there are and how to get the rest, in the tab's message area.
    out = friendly(lambda *a: step.show_question(ctx, *a), 7, 6)(*picked, N_TRACES, "", "", "")
    assert f"question #: {N_TRACES} is outside 0..{N_TRACES - 1}" in out[6]
    assert f"only the first {N_TRACES} CSQA validation questions" in out[6] and "--data-dir" in out[6]
    # A run on the cached question shows the same line; one's own question has none.
    out = step.step(ctx, "recall", "tt-phase1", "recall_analyze_summarize", *picked, 0, "", "", "", False, 0.7, 0,
                    1.0, 8, 0, "constrain", "", None, None)
    assert first.stem in out[0] and "no data folder" in out[0] and out[1]
    own = step.show_question(ctx, "my own question", "csqa", "validation", 0, "Where?", "here\nthere", "")[0]
    assert "Where?" in own and "no data folder" not in own
    # Nothing cached for another benchmark or split: today's data error.
    out = friendly(lambda *a: step.show_question(ctx, *a), 7, 6)("benchmark", "obqa", "validation", 0, "", "", "")
    assert "Error" in out[6] and "hub" in out[6] and "cached" not in out[6]
    assert "hub" in friendly(lambda *a: step.show_question(ctx, *a), 7, 6)("benchmark", "csqa", "train", 0, "", "",
                                                                         "")[6]


def test_without_data_explore_opens_on_the_cached_questions_and_says_why_no_rationales(no_data_ctx, shipped_root):
    ctx = no_data_ctx
    cached = read_traces(shipped_root / "tt-phase1" / "traces" / "validation.jsonl")
    explore_ = friendly(lambda *a: explore.show(ctx, *a), 4, 0)
    header, question, body, index = explore_("csqa", "validation", 1, "", "recall_analyze_summarize")
    assert index == 1 and cached[1].question.stem in question
    assert f"Question 1 of {N_TRACES} cached" in header and "no teacher rationales" in header
    assert "--data-dir" in header  # where to point for the rationales
    assert cached[1].question.stem in body  # the Recall input the student gets
    # Nothing cached for the training split: the data error, once, in the header.
    header = explore_("csqa", "train", 0, "", "recall_analyze_summarize")[0]
    assert header.startswith("**Error:**") and "hub" in header and "cached" not in header


def test_without_data_compare_runs_over_the_cached_questions(no_data_ctx):
    ctx = no_data_ctx
    summary, table, _ = compare.over_split(ctx, "tt-phase1", "tt-reflected", "csqa", "validation", 0, compare.ALL)
    assert ctx.students.loads == 0  # the shipped traces, no model run
    assert "Cached questions only" in summary and f"{N_TRACES} questions" in summary
    assert f"{N_TRACES} CSQA validation questions cached" in summary


def test_without_data_the_train_tab_says_so_and_offers_the_shipped_student_to_reflect(no_data_ctx):
    from demo import train

    job, p2_from, students, notice = train.refresh(no_data_ctx, None, None, "smollm2-135m")
    assert notice.startswith("**No training data.**") and "--data-dir" in notice and "hub" in notice
    # Phase 2 can start from the shipped phase-1 student (by name), not from the reflected one.
    assert p2_from["choices"] == ["tt-phase1"] and p2_from["value"] == "tt-phase1"


def test_compare_on_one_cached_question_reads_the_shipped_traces(no_data_ctx, shipped_root):
    ctx = no_data_ctx
    cached = {name: read_traces(shipped_root / name / "traces" / "validation.jsonl")
              for name in ("tt-phase1", "tt-reflected")}
    out = compare.one_question(ctx, "tt-phase1", "tt-reflected", "benchmark", "csqa", "validation", 2, "", "", "")
    assert ctx.students.loads == 0  # no model run
    a, b = cached["tt-phase1"][2], cached["tt-reflected"][2]
    assert "".join(text for text, _ in out[5]).split() == a.summary.split()
    assert "".join(text for text, _ in out[6]).split() == b.summary.split()
    assert compare.CACHED_MARK in out[7] and compare.CACHED_MARK in out[8]
    # Another answer mode than the one the traces were made with: the models run.
    out = compare.one_question(ctx, "tt-phase1", "tt-reflected", "benchmark", "csqa", "validation", 2, "", "", "",
                               mode="free")
    assert ctx.students.loads == 2 and compare.CACHED_MARK not in out[7]


# -- first use without data, with an empty store ---------------------------------------------------------------

def test_without_data_the_quick_run_is_not_offered(tmp_path, monkeypatch):
    from test_app import launched_app

    monkeypatch.delenv("TINYTHINKER_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./data either
    with launched_app(tmp_path / "ws", None) as (ctx, url):
        client = Client(url, verbose=False)
        panel = client.predict(api_name="/start_panel")
        panel = panel[0] if isinstance(panel, tuple | list) else panel
        assert "Quick run not offered" in panel and "--data-dir" in panel
        message = client.predict(api_name="/quick_run")
        assert "Error" in message and "--data-dir" in message
        assert jobs.list_jobs(ctx.ws) == []


def test_empty_queue_says_how_to_fill_it(empty_app):
    _, client = empty_app
    out = client.predict("ann", "", "", "any", "", "", api_name="/annotate_next")
    assert out[0] is None and "Fill the queue" in out[1] and "\U0001f389" not in out[1]


def test_upload_a_traces_file_into_the_queue(empty_app, data_dir, tmp_path):
    ctx, client = empty_app
    questions = ctx.questions("csqa", "validation")[:2]
    traces = run_pipeline(load_student(ctx.ws.runs_dir / "tiny-b" / "best"), questions,
                          sampling=make_sampling(False, 0.7, 0, 1.0, 24))
    path = write_traces(tmp_path / "mine.jsonl", traces)
    message = client.predict(handle_file(str(path)), "uploaded-b", api_name="/annotate_upload")
    assert "Imported 2 trace(s)" in message
    assert "Error" in client.predict(None, "", api_name="/annotate_upload")
    out = client.predict("ann", "uploaded-b", "", "any", "", "", api_name="/annotate_next")
    assert out[0] is not None and "uploaded-b" in out[1]


@pytest.mark.slow
def test_generate_traces_job_fills_the_queue(empty_app):
    ctx, client = empty_app
    message = client.predict(["tiny-a/best"], "csqa", "validation", 3, 1, 0.7, api_name="/annotate_generate")
    message = message[-1] if isinstance(message, tuple | list) else message
    assert "Started traces job" in message, message
    job = next(j for j in jobs.list_jobs(ctx.ws) if j.kind == "traces")
    deadline = time.time() + 600
    while jobs.is_running(job) and time.time() < deadline:
        time.sleep(1)
    assert jobs.status(job).state == jobs.FINISHED, jobs.log_tail(job)
    with Store(ctx.ws.db) as store:
        assert "tiny-a/best" in store.models()
    out = client.predict("ann", "tiny-a/best", "", "any", "", "", api_name="/annotate_next")
    assert out[0] is not None


def test_a_job_that_will_not_fit_is_refused_before_it_starts(empty_app, monkeypatch):
    ctx, client = empty_app
    # On CPU a batch of 4096 runs as forward passes of 4 and fits this machine: make it a 2 GB machine instead.
    monkeypatch.setattr(jobs, "_meminfo", lambda: {"MemAvailable": 2 * 2**30, "MemTotal": 4 * 2**30})
    job, message = client.predict("huge", "csqa", "smollm2-135m", "recall_analyze_summarize", 20, 1.0, 8, 4, 2,
                                  4096, 5e-5, 0, 0, "letter", "free", 1.0, api_name="/start_phase1")
    assert "not started" in message and "GB" in message and "batch 4096" in message
    assert not (ctx.ws.runs_dir / "huge").exists() and jobs.load_job(ctx.ws.run_dir("huge")) is None


def test_a_hub_id_offline_gets_the_hub_message(empty_app):
    _, client = empty_app
    note = _step(client, "all", "gpt2")[6]
    assert "hub" in note and "does not exist under" not in note


def test_a_truncated_input_is_said(empty_app):
    _, client = empty_app
    long_stem = "Where is the word? " + "very " * 3000
    out = _step(client, "recall", "tiny-a/best", source="my own question", stem=long_stem, options="here\nthere")
    assert "Input truncated" in out[6] and "tokens" in out[6]
    short = _step(client, "recall", "tiny-a/best", source="my own question", stem="Where?", options="a\nb")
    assert "truncated" not in short[6]


def test_step_follows_the_answer_mode_of_its_run(empty_app):
    ctx, client = empty_app
    config = ctx.ws.runs_dir / "tiny-b" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "restrict_answer": "score",
                                  "stage_type": "analyze_summarize"}))
    stage_type, restrict, _ = client.predict("tiny-b/best", api_name="/step_model")
    assert (stage_type, restrict) == ("analyze_summarize", "score")


# -- Compare, in process -----------------------------------------------------------------------------------------

def test_compare_marks_untrained_models_and_reports_progress_early(empty_app):
    ctx, _ = empty_app
    tiny = ctx.ws.runs_dir / "tiny-a" / "best"

    class Loader:  # the untrained default, stood in for by a tiny student (no real model here)
        loads = 0

        def get(self, path):
            self.loads += 1
            return load_student(tiny if str(path) == "smollm2-135m" else path)

    calls = []

    def progress(fraction, desc=""):
        calls.append((fraction, desc, Loader.loads))

    real, ctx.students = ctx.students, Loader()
    try:
        summary, _, _ = compare.over_split(ctx, "smollm2-135m", "tiny-a/best", "csqa", "validation", 5,
                                           compare.ALL, progress)
    finally:
        ctx.students = real
    assert "smollm2-135m (untrained)" in summary
    # The bar says what runs before the first model is even loaded, then moves with each batch.
    assert calls[0][0] == 0.0 and "A:" in calls[0][1] and calls[0][2] == 0
    assert any(0 < f < 1 for f, _, _ in calls) and any(f == 1.0 for f, _, _ in calls)


def test_first_page_explains_the_method(shipped_app):
    ctx, *_ = shipped_app
    from demo.app import METHOD

    assert all(word in METHOD for word in ("Recall", "Analyze", "Summarize", "Phase 1", "Phase 2", "Piao & Park",
                                           "NAACL 2025"))


def test_undo_reverses_a_whole_save(shipped_app):
    ctx, client, _ = shipped_app
    out = client.predict("undoer", "tt-phase1", "", "any", "", "", api_name="/annotate_next")
    trace_id = int(out[0])
    slots = ["good", ""] * 5 + [None, ""] * 3
    saved = client.predict(trace_id, "undoer", "", "bad", "", *slots, "good", "", "tt-phase1", "", "any", "", "",
                           api_name="/annotate_save")
    assert "saved 7 label(s)" in saved[1]
    undone = client.predict("undoer", api_name="/annotate_undo")
    assert "7 label(s)" in undone[1] and int(undone[0]) == trace_id
    with Store(ctx.ws.db) as store:
        assert store.labels(annotator="undoer") == []

