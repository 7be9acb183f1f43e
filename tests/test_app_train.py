"""The Train tab end to end: a real phase-1 child process on a tiny student, followed, then one cancelled (its
checkpoint kept and resumed), a reused run name refused, and the quick run (on a tiny default student here)."""

import time

import pytest
from gradio_client import Client

from tinythinker import jobs
from tinythinker.runs import last_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    from test_app import launched_app

    root = tmp_path_factory.mktemp("ws")
    # The quick run's student: a tiny run of this workspace, never the real default.
    with launched_app(root, data_dir, default_student=str(root / "runs" / "tiny-a" / "best")) as (ctx, url):
        yield ctx, Client(url, verbose=False)


def _phase1(client, run, max_steps, lr=5e-4):
    # run, data, student, stage type, interval, epochs, limit, eval limit, max steps, batch size, lr, seed,
    # warm-up, answer format, restrict answer, cross-attention lr scale
    return client.predict(run, "csqa", "tiny-a/best", "recall_analyze_summarize", 1, 1.0, 8, 4, max_steps, 2,
                          lr, 0, 0, "letter", "free", 1.0, api_name="/start_phase1")


def _wait(client, run, until, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, bar, plot, log = client.predict(run, api_name="/job_status")
        if any(word in status for word in until):
            return status, bar, plot, log
        time.sleep(1)
    raise AssertionError(f"job {run} did not reach {until} in {timeout} s; last status {status!r}\n{log}")


def test_phase1_job_runs_to_the_end_and_is_found_again(served):
    ctx, client = served
    job, message = _phase1(client, "p1-tiny", 2)
    assert job["value"] == "p1-tiny" and "Started" in message and "memory" in message
    status, bar, plot, log = _wait(client, "p1-tiny", (" finished", "failed", "killed"))
    assert "finished" in status, log
    assert 'value="100"' in bar and log.strip()
    assert (ctx.ws.runs_dir / "p1-tiny" / "metrics.jsonl").is_file()
    assert '"loss' in plot["plot"]
    # As after a page reload or an app restart: nothing in memory, the job is read back from its run folder.
    jobs._CHILDREN.clear()
    status, *_ = client.predict("p1-tiny", api_name="/job_status")
    assert "finished" in status
    assert "p1-tiny/best" in [value for _, value in ctx.checkpoint_choices()]
    # The same name again with other settings: refused before it starts, with the config diff; the earlier,
    # successful job keeps its record.
    _, refused = _phase1(client, "p1-tiny", 2, lr=1e-4)
    assert "other settings" in refused and "lr: 0.0005 -> 0.0001" in refused
    assert jobs.load_job(ctx.ws.run_dir("p1-tiny")).returncode == 0
    _, again = _phase1(client, "p1-tiny", 2)
    assert "already finished" in again
    rows, *_ = client.predict(api_name="/results")
    assert [r[8] for r in rows["data"] if r[0] == "p1-tiny"] == ["finished"]


def test_cancel_keeps_the_last_checkpoint_and_a_rerun_resumes(served):
    ctx, client = served
    _phase1(client, "p1-cancel", 10_000)
    _wait(client, "p1-cancel", ("step ",), timeout=300)  # in the training loop
    client.predict("p1-cancel", api_name="/cancel_job")
    status, bar, *_ = _wait(client, "p1-cancel", ("cancelled", "failed", "killed"), timeout=300)
    assert "cancelled" in status and "checkpoint kept: checkpoint-" in status, status
    assert "cancelled" in bar and "starting" not in bar
    job = jobs.load_job(ctx.ws.run_dir("p1-cancel"))
    assert job.cancelled and job.finished is not None and job.returncode == jobs.CANCELLED_EXIT
    ckpt = last_checkpoint(ctx.ws.runs_dir / "p1-cancel")
    assert ckpt is not None and (ckpt / "trainer_state.json").is_file()
    rows, *_ = client.predict(api_name="/results")
    assert [r[8] for r in rows["data"] if r[0] == "p1-cancel"] == [f"cancelled ({ckpt.name} kept)"]
    # Starting it again with the same settings resumes from that checkpoint.
    _, message = _phase1(client, "p1-cancel", 10_000)
    assert f"resuming p1-cancel from {ckpt.name}" in message
    _wait(client, "p1-cancel", ("step ",), timeout=300)
    jobs.kill(jobs.load_job(ctx.ws.run_dir("p1-cancel")))
    assert f"resuming from {ckpt}" in (ctx.ws.runs_dir / "p1-cancel" / "train.log").read_text() or \
        ckpt.name in jobs.log_tail(jobs.load_job(ctx.ws.run_dir("p1-cancel")), 400)


def test_bad_settings_start_nothing(served):
    ctx, client = served
    _, message = client.predict("x; touch /tmp/pwned", "csqa", "tiny-a/best", "recall_analyze_summarize", 1, 1.0, 8,
                                4, 2, 2, 5e-4, 0, 0, "letter", "free", 1.0, api_name="/start_phase1")
    assert "must be 1-80 characters" in message
    _, message = client.predict("ok-run", "csqa", "../../etc", "recall_analyze_summarize", 1, 1.0, 8, 4, 2, 2,
                                5e-4, 0, 0, "letter", "free", 1.0, api_name="/start_phase1")
    assert "outside the workspace" in message
    assert not (ctx.ws.runs_dir / "ok-run").exists()


def test_quick_run_starts_one_small_job(served):
    ctx, client = served
    message = client.predict(api_name="/quick_run")
    assert "Started quick run" in message and "70 steps" in message and "minutes" not in message
    job = next(j for j in jobs.list_jobs(ctx.ws) if j.kind.endswith("(quick run)"))
    try:
        assert job.argv[job.argv.index("--student") + 1] == ctx.default_student
        assert int(job.argv[job.argv.index("--limit") + 1]) <= 500
        assert "already running" in client.predict(api_name="/quick_run")
    finally:
        jobs.cancel(job)
    assert not jobs.is_running(job)
