"""The app through its HTTP API (gradio_client), against a launched app over a tmp workspace with tiny students."""

import json
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import gradio.networking
import httpx
import pytest
from gradio_client import Client

from demo.app import build_app, launch_kwargs
from demo.context import AppContext
from tinythinker import stages
from tinythinker.compare import disagreements
from tinythinker.data import load_questions
from tinythinker.pipeline import complete_trace, run_pipeline
from tinythinker.stages import ANALYZE
from tinythinker.store.core import Store
from tinythinker.students import load_student
from tinythinker.tiny import tiny_student
from tinythinker.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
STEP_DEFAULTS = dict(stage_type="recall_analyze_summarize", source="benchmark", benchmark="csqa",
                     split="validation", index=3, stem="", options="", answer="", do_sample=False,
                     temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=24, seed=0, restrict="free", recall="",
                     analyses_table={"headers": ["option", "text", "analysis"], "data": []},
                     timings=None)


def make_workspace(root: Path, data_dir: Path | None, traces: bool = True, runs: bool = True) -> Workspace:
    """Two tiny bert2bert 'runs' (different seeds, so they disagree) and a store holding a few of their traces
    (none with `traces=False`: an empty queue; no runs either with `runs=False`: a first start). `data_dir=None`
    is an instance without benchmark data."""
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)) if runs else ():
        run = root / "runs" / name
        tiny_student("bert2bert", seed=seed).save(run / "best")
        (run / "config.json").write_text(json.dumps({"command": "train", "student": "tiny", "data": "csqa",
                                                     "stage_type": "recall_analyze_summarize"}))
        (run / "metrics.jsonl").write_text(
            json.dumps({"kind": "train", "step": 1, "loss": 2.0, "stage": "recall"}) + "\n"
            + json.dumps({"kind": "eval", "step": 1, "accuracy": 0.2 + seed / 10}) + "\n")
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "runs").mkdir(parents=True, exist_ok=True)
    ws = Workspace(runs_dir=root / "runs", db=root / "annotations" / "t.db", data_dir=data_dir)
    if not traces or not runs or data_dir is None:
        return ws
    questions = load_questions("csqa", "validation", data_dir=data_dir, limit=3)
    traces = run_pipeline(load_student(ws.runs_dir / "tiny-a" / "best"), questions,
                          sampling=_sampling(24))
    with Store(ws.db) as store:
        store.import_traces(traces, model="tiny-a", iteration=0)
    return ws


def _sampling(tokens):
    from demo.widgets import make_sampling

    return make_sampling(False, 0.7, 0, 1.0, tokens)


def _patient_url_ok(url: str, timeout_s: float = 180.0) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.head(url, timeout=30, follow_redirects=False).status_code < 400:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


@contextmanager
def launched_app(root: Path, data_dir: Path | None, shipped_root: Path | None = None, traces: bool = True,
                 default_student: str | None = None, runs: bool = True):
    """The app over a fresh tiny workspace, served on 127.0.0.1: yields (context, url); closed afterwards.
    Shared by the gradio_client, Train-tab and browser tests. No shipped models unless `shipped_root` names a
    folder of them (tests/shipped_helpers.py); `default_student` (e.g. a tiny run) replaces the real default."""
    ctx = AppContext(ws=make_workspace(root, data_dir, traces=traces, runs=runs),
                     shipped_root=shipped_root or root / "none",
                     default_student=default_student or AppContext.default_student)
    app = build_app(ctx)
    app.queue()
    # gradio's launch gives up when its own page does not answer a HEAD in 3 s, which a loaded 2-core machine
    # (training in the background) does not always manage: wait for it as long as the tests wait for anything.
    with mock.patch.object(gradio.networking, "url_ok", _patient_url_ok):
        app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        yield ctx, app.local_url
    finally:
        app.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    with launched_app(tmp_path_factory.mktemp("ws"), data_dir) as (ctx, url):
        yield ctx, Client(url, verbose=False)


def _step(client, action, checkpoint="tiny-a/best", **over):
    kw = {**STEP_DEFAULTS, **over}
    return client.predict(checkpoint, *kw.values(), api_name=f"/step_{action}")


def _analyses(table) -> dict:
    rows = table["data"] if isinstance(table, dict) else table
    return {r[0]: r[2] for r in rows}


def test_step_through_gives_the_library_trace(served, data_dir):
    ctx, client = served
    q = ctx.questions("csqa", "validation")[3]
    student = load_student(ctx.ws.runs_dir / "tiny-a" / "best")
    expected = run_pipeline(student, [q], sampling=_sampling(24))[0]

    _, recall, table, summary, verdict, timings, note = _step(client, "all")
    assert (recall, _analyses(table), summary) == (expected.recall, expected.analyses, expected.summary)
    assert set(timings) == {"recall", "analyze", "summarize"} and "untrained" not in note.lower()
    assert (expected.predicted or "no valid answer") in verdict

    # One stage at a time, each from the previous stage's output, gives the same trace.
    _, r1, t1, *_ = _step(client, "recall")
    assert r1 == expected.recall and not any(_analyses(t1).values())
    _, _, t2, s2, *_ = _step(client, "analyze", recall=r1)
    assert _analyses(t2) == expected.analyses and s2 == ""
    _, _, _, s3, v3, timings3, _ = _step(client, "summarize", recall=r1, analyses_table=t2)
    assert s3 == expected.summary and "summarize" in timings3

    # Edit the recall, re-run only what follows: what complete_trace gives from that recall.
    edited = "Water is something people drink."
    again = complete_trace(student, q, "recall_analyze_summarize", recall=edited, from_stage=ANALYZE,
                           sampling=_sampling(24))
    _, r4, t4, s4, *_ = _step(client, "after_recall", recall=edited)
    assert (r4, _analyses(t4), s4) == (edited, again.analyses, again.summary)


def test_run_all_shows_each_stage_as_it_lands(served):
    ctx, client = served
    kw = STEP_DEFAULTS
    job = client.submit("tiny-a/best", *kw.values(), api_name="/step_all")
    final = job.result(timeout=300)
    shown = job.outputs()
    assert tuple(shown[-1]) == tuple(final)  # the last update is the result
    # Besides the text as it is written (a few updates a second), one update as each stage is done: its
    # timing appears then, whole, and the later stages are still empty.
    done = {}
    for out in shown:
        done.setdefault(tuple(sorted(out[5] or {})), out)
    (_, r1, t1, s1, v1, _, _), (_, r2, t2, s2, v2, _, _) = done[("recall",)], done[("analyze", "recall")]
    assert r1 == final[1] and not any(_analyses(t1).values()) and (s1, v1) == ("", "")
    assert r2 == final[1] and _analyses(t2) == _analyses(final[2]) and (s2, v2) == ("", "")
    assert all(out[4] == "" for out in shown[:-1])  # no verdict before Summarize is done
    # An error before the first stage still ends as one message in the note, the form untouched.
    out = _step(client, "after_recall", recall="")
    assert "Recall text first" in out[6]


def test_untrained_default_is_labelled(served):
    ctx, client = served
    choices = dict((value, label) for label, value in ctx.checkpoint_choices())
    assert "untrained" in choices[ctx.default_student]
    assert next(iter(choices)) in ("tiny-a/best", "tiny-b/best")  # trained first


def test_custom_question_and_bad_input(served):
    _, client = served
    out = _step(client, "recall", source="my own question", stem="Where do fish live?",
                options="water\ndesert\nsky")
    assert "Where do fish live?" in out[0] and out[1]
    # A validation error is one message in the note above the question; every other output is left alone (no
    # error badge over the form).
    bad = _step(client, "recall", source="my own question", stem="Only one?", options="yes")
    assert "2 to 26 options" in bad[6] and "Error" in bad[6]
    assert all(isinstance(x, dict) and x.get("__type__") == "update" for x in bad[:6])


@pytest.mark.parametrize("checkpoint", ["../../etc/passwd", "/etc/passwd", "tiny-a/../../../../etc"])
def test_checkpoint_field_cannot_leave_the_workspace(served, checkpoint):
    _, client = served
    assert "outside the workspace" in _step(client, "all", checkpoint=checkpoint)[6]


def test_data_file_field_cannot_leave_the_workspace(served):
    _, client = served
    header, *_ = client.predict("my JSONL file", "validation", 0, "../../etc/passwd", "recall_analyze_summarize",
                                api_name="/explore")
    assert "outside the workspace" in header
    # Before anything is typed: what to do, not "data file: empty path".
    header, *_ = client.predict("my JSONL file", "validation", 0, "", "recall_analyze_summarize",
                                api_name="/explore")
    assert "empty path" not in header and "Type the path" in header
    header, question, rationales, index = client.predict("csqa", "validation", 2, "", "recall_analyze_summarize",
                                                         api_name="/explore")
    assert "Question 2 of 1221" in header and "Recall:" in rationales


def test_label_made_in_the_ui_lands_in_the_store(served):
    ctx, client = served
    out = client.predict("ann", "", "", "any", "", "", api_name="/annotate_next")
    trace_id = int(out[0])
    slots = [None, ""] * 8
    slots[0] = "bad"  # option A's analysis
    saved = client.predict(trace_id, "ann", "too vague", "good", "", *slots, "unsure", "", "", "", "any", "", "",
                           api_name="/annotate_save")
    assert "saved 3 label(s)" in saved[1] and int(saved[0]) != trace_id
    with Store(ctx.ws.db) as store:
        labels = {(lab.stage, lab.option): lab for lab in store.labels(trace_id)}
    assert labels[("recall", None)].verdict == "good" and labels[("recall", None)].annotator == "ann"
    assert labels[("analyze", "A")].verdict == "bad" and labels[("analyze", "A")].note == "too vague"
    assert labels[("summarize", None)].verdict == "unsure"
    # Undo walks back the whole last save (its three labels) and shows its trace again.
    undone = client.predict("ann", api_name="/annotate_undo")
    assert int(undone[0]) == trace_id and "undid" in undone[1] and "3 label(s)" in undone[1]
    with Store(ctx.ws.db) as store:
        assert store.labels(trace_id) == []
    # A save without a verdict: one message in the header, the form left as it was.
    bad = client.predict(int(undone[0]), "ann", "", None, "", *([None, ""] * 8), None, "", "", "", "any", "", "",
                         api_name="/annotate_save")
    assert "give at least one stage a verdict" in bad[1]
    assert isinstance(bad[0], dict) and bad[0].get("__type__") == "update"


def test_compare_returns_the_disagreement_table(served):
    ctx, client = served
    summary, table, _ = client.predict("tiny-a/best", "tiny-b/best", "csqa", "validation", 6,
                                       "all disagreements", "each model's own", api_name="/compare_split")
    questions = ctx.questions("csqa", "validation")[:6]
    ta = run_pipeline(load_student(ctx.ws.runs_dir / "tiny-a" / "best"), questions)
    tb = run_pipeline(load_student(ctx.ws.runs_dir / "tiny-b" / "best"), questions)
    # "all disagreements" lists only questions where the two answers differ (both wrong alike is agreement).
    rows = [[r["id"], r["kind"], r["a"], r["b"]] for r in disagreements(ta, tb) if not r["same answer"]]
    assert [[r[0], r[1], r[3], r[4]] for r in table["data"] if r[0]] == rows and "6 questions" in summary
    assert all(r[5] is False or r[5] == "false" for r in table["data"] if r[0])
    assert len(list((ctx.ws.runs_dir / "tiny-a" / "traces").glob("*.jsonl"))) == 1
    # Filtered, from the cache (no model load).
    loads = ctx.students.loads
    _, wrong_to_right, _ = client.predict("tiny-a/best", "tiny-b/best", "csqa", "validation", 6, "wrong->right",
                                          "each model's own", api_name="/compare_split")
    assert ctx.students.loads == loads
    assert all(r[1] == "wrong->right" for r in wrong_to_right["data"])


def test_results_list_runs(served):
    _, client = served
    rows, _, _, _ = client.predict(api_name="/results")
    assert sorted(r[0] for r in rows["data"]) == ["tiny-a", "tiny-b"]
    # A phase-1 run has no self-reflection chart.
    _, _, iterations, message = client.predict("tiny-a", api_name="/run_detail")
    assert iterations.get("visible") is False and not message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> list[str]:
    """Local addresses listening on `port`, from the kernel's socket tables."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":
                found.append(addr)
    return found


@pytest.mark.slow
def test_app_py_binds_loopback_and_auth_works(tmp_path, data_dir):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--auth", "ann:pw",
                             "--runs-dir", str(tmp_path / "runs"), "--db", str(tmp_path / "a" / "t.db"),
                             "--data-dir", str(data_dir)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not _listening(port):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "app.py did not start"
            time.sleep(0.2)
        assert _listening(port) == ["0100007F"]  # 127.0.0.1 only
        url = f"http://127.0.0.1:{port}/"
        # A generous timeout: the answers are what is tested, and a loaded machine can take over httpx's 5 s
        assert httpx.get(url + "config", timeout=60).status_code == 401
        assert httpx.post(url + "login", data={"username": "ann", "password": "wrong"}, timeout=60).status_code == 400
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, auth=("ann", "wrong"), verbose=False)
        client = Client(url, auth=("ann", "pw"), verbose=False)
        rows, _, _, _ = client.predict(api_name="/results")
        assert rows["data"] == [] or rows["data"] == [[None] * 9] or not any(rows["data"][0])
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_run_and_export_fields_cannot_leave_the_workspace(served):
    ctx, client = served
    for bad in ("../../etc", "/etc", "tiny-a/../../.."):
        assert "outside the workspace" in client.predict(bad, api_name="/run_detail")[3]
    for bad in ("../../tmp/x", "/tmp/x", "a/b"):
        assert "export name" in str(client.predict("jsonl", bad, "curated", api_name="/annotate_export")[0])
    manifest, download = client.predict("jsonl", "reflection-test", "all", api_name="/annotate_export")
    assert (ctx.ws.annotations_dir / "reflection-test").is_dir() and manifest["folder"] == str(
        ctx.ws.annotations_dir / "reflection-test")
    import zipfile

    with zipfile.ZipFile(download) as z:  # the export, downloadable as one file
        assert z.namelist()


def test_compare_one_question_marks_the_differences(served):
    _, client = served
    out = client.predict("tiny-a/best", "tiny-b/best", "benchmark", "csqa", "validation", 1, "", "", "",
                         "each model's own", api_name="/compare_question")
    question, diffs, verdicts = out[0], out[1:7], out[7:]
    assert "(A)" in question and all("Prediction" in v for v in verdicts)
    recall_a, recall_b = diffs[0], diffs[1]
    tags_a = {span["class_or_confidence"] for span in recall_a}
    tags_b = {span["class_or_confidence"] for span in recall_b}
    # Two differently seeded random students write different recalls: words only in A / only in B are marked.
    assert "-" in tags_a and "+" in tags_b and "+" not in tags_a and "-" not in tags_b


@pytest.mark.parametrize("mode", ["constrain", "score"])
def test_restricted_answer_is_always_an_option(served, mode):
    ctx, client = served
    q = ctx.questions("csqa", "validation")[3]
    *_, summary, verdict, _, _ = _step(client, "all", restrict=mode)
    assert "no valid answer" not in verdict
    assert summary in stages.answer_choices(q)


def test_int8_app_serves_quantized_students_and_says_so(tmp_path, data_dir):
    import app as app_module
    from demo.step import model_note, step

    args = app_module.build_parser().parse_args(
        ["--int8", "--runs-dir", str(tmp_path / "runs"), "--db", str(tmp_path / "a" / "t.db")])
    assert app_module.make_context(args).students.int8
    assert not app_module.make_context(app_module.build_parser().parse_args(
        ["--runs-dir", str(tmp_path / "runs"), "--db", str(tmp_path / "a" / "t.db")])).students.int8

    from tinythinker.modelcache import StudentCache

    ctx = AppContext(ws=make_workspace(tmp_path / "ws", data_dir, traces=False),
                     shipped_root=tmp_path / "none", students=StudentCache(int8=True))
    student = ctx.student("tiny-a/best")
    assert student.quantized == "int8"
    assert "int8 weights" in model_note(ctx, "tiny-a/best")
    kw = {**STEP_DEFAULTS}
    _, recall, table, summary, verdict, timings, note = step(ctx, "all", "tiny-a/best", *kw.values())
    assert set(timings) == {"recall", "analyze", "summarize"} and "int8 weights" in note
