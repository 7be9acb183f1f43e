"""The Train tab end to end: a real phase-1 child process on a tiny student, followed, then one cancelled."""

import time

import pytest
from gradio_client import Client

from tinythinker import jobs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    from test_app import launched_app

    with launched_app(tmp_path_factory.mktemp("ws"), data_dir) as (ctx, url):
        yield ctx, Client(url, verbose=False)


def _phase1(client, run, max_steps):
    # run, data, student, stage type, interval, epochs, limit, eval limit, max steps, batch size, lr, seed,
    # warm-up, answer format, restrict answer, cross-attention lr scale
    return client.predict(run, "csqa", "tiny-a/best", "recall_analyze_summarize", 1, 1.0, 8, 4, max_steps, 2,
                          5e-4, 0, 0, "letter", "free", 1.0, api_name="/start_phase1")


def _wait(client, run, until, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, bar, plot, log = client.predict(run, api_name="/job_status")
        if any(word in status for word in until):
            return status, bar, plot, log
        time.sleep(1)
    raise AssertionError(f"job {run} did not reach {until} in {timeout} s; last status {status!r}\n{log}")


def test_phase1_job_runs_to_the_end_and_is_found_again(served):
    ctx, client = served
    assert _phase1(client, "p1-tiny", 2)["value"] == "p1-tiny"
    status, bar, plot, log = _wait(client, "p1-tiny", ("finished", "failed"))
    assert "finished" in status, log
    assert 'value="100"' in bar and log.strip()
    assert (ctx.ws.runs_dir / "p1-tiny" / "metrics.jsonl").is_file()
    assert '"loss' in plot["plot"]
    # As after a page reload or an app restart: nothing in memory, the job is read back from its run folder.
    jobs._CHILDREN.clear()
    status, *_ = client.predict("p1-tiny", api_name="/job_status")
    assert "finished" in status
    assert "p1-tiny/best" in [value for _, value in ctx.checkpoint_choices()]


def test_cancel_a_running_job(served):
    ctx, client = served
    _phase1(client, "p1-cancel", 10_000)
    _wait(client, "p1-cancel", ("running",), timeout=30)
    status, *_ = client.predict("p1-cancel", api_name="/cancel_job")
    assert "cancelled" in status
    job = jobs.load_job(ctx.ws.run_dir("p1-cancel"))
    assert job.cancelled and job.finished is not None


def test_bad_settings_start_nothing(served):
    ctx, client = served
    with pytest.raises(Exception, match="must be 1-80 characters"):
        client.predict("x; touch /tmp/pwned", "csqa", "tiny-a/best", "recall_analyze_summarize", 1, 1.0, 8, 4, 2,
                       2, 5e-4, 0, 0, "letter", "free", 1.0, api_name="/start_phase1")
    with pytest.raises(Exception, match="outside the workspace"):
        client.predict("ok-run", "csqa", "../../etc", "recall_analyze_summarize", 1, 1.0, 8, 4, 2, 2, 5e-4, 0,
                       0, "letter", "free", 1.0, api_name="/start_phase1")
    assert not (ctx.ws.runs_dir / "ok-run").exists()


def test_quick_run_starts_one_small_job(served):
    ctx, client = served
    message = client.predict(api_name="/quick_run")
    assert "Started quick run" in message
    job = next(j for j in jobs.list_jobs(ctx.ws) if j.kind.endswith("(quick run)"))
    try:
        assert job.argv[job.argv.index("--student") + 1] == ctx.default_student
        assert int(job.argv[job.argv.index("--limit") + 1]) <= 500
        assert "already running" in client.predict(api_name="/quick_run")
    finally:
        jobs.cancel(job)
    assert not jobs.is_running(job)
