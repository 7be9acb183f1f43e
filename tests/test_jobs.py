"""What a job says about itself, and what is refused before one starts (issue 14, items 1, 4 and 7), on small
child processes: no model is loaded here."""

import json
import sys
import time
from pathlib import Path

import pytest

from tinythinker import jobs
from tinythinker.jobs import JobRefused, TrainSettings
from tinythinker.workspace import Workspace


@pytest.fixture
def ws(tmp_path):
    (tmp_path / "runs").mkdir()
    return Workspace(runs_dir=tmp_path / "runs", db=tmp_path / "annotations" / "t.db", data_dir=None)


def _wait(job, timeout=30):
    deadline = time.time() + timeout
    while jobs.is_running(job) and time.time() < deadline:
        time.sleep(0.05)
    assert not jobs.is_running(job), "the job did not end"
    return job


def test_a_killed_job_says_by_what_signal_and_its_peak_memory(ws):
    # ~200 MB resident, then the kernel's kind of death: SIGKILL from outside the app's Cancel.
    code = ("import os, signal; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    job = _wait(jobs.start([sys.executable, "-c", code], ws.run_dir("oom"), kind="test"))
    st = jobs.status(job)
    assert st.state == jobs.KILLED and job.returncode == -9
    assert "SIGKILL" in st.text and "out-of-memory" in st.text and "peak memory" in st.text
    assert job.peak_rss > 150 * 2**20  # wait4's ru_maxrss: measured by the kernel, kept after the process died
    assert "starting" not in st.text
    assert jobs.load_job(ws.run_dir("oom")).peak_rss == job.peak_rss  # persisted for the next app process


def test_a_failed_job_says_failed_with_its_last_error_line(ws):
    code = "import sys; print('loading...'); print('error: the data folder is missing', file=sys.stderr); sys.exit(2)"
    job = _wait(jobs.start([sys.executable, "-c", code], ws.run_dir("bad"), kind="test"))
    st = jobs.status(job)
    assert st.state == jobs.FAILED and "exit code 2" in st.text and "the data folder is missing" in st.text
    assert jobs.run_status(ws.run_dir("bad"), False) == "failed (exit 2)"


def test_cancel_is_reported_as_cancelled_not_finished(ws):
    job = jobs.start([sys.executable, "-c", "import time; time.sleep(60)"], ws.run_dir("c"), kind="test")
    jobs.cancel(job, wait=False)
    _wait(job)
    assert jobs.status(job).state == jobs.CANCELLED
    assert jobs.run_status(ws.run_dir("c"), False) == "cancelled"


def test_eta_comes_from_the_measured_step_time(ws):
    job = jobs.Job(run_dir=ws.runs_dir / "r", pid=1, argv=["python", "-m", "tinythinker.jobs", "train"],
                   kind="t", started=0.0)
    job.log_path.parent.mkdir(parents=True)
    job.log_path.write_text("Loading weights: 100%|#####| 99/99 [00:00<00:00]\n"
                            "  3%|#   | 2/70 [02:10<1:13:40, 65.00s/it]\r 26%|##  | 18/70 [19:30<56:20, 65.01s/it]\n")
    pace = jobs.eta(job)
    assert pace["step"] == 18 and pace["total"] == 70 and abs(pace["s_per_step"] - 65.01) < 1e-6
    assert pace["remaining_s"] == 56 * 60 + 20
    assert jobs.duration(pace["remaining_s"]) == "56 min"


def test_a_job_that_will_not_fit_is_refused_with_the_estimate(ws):
    # in one piece (a command line's --micro-batches 1): the CPU default would run it as forward passes of 4
    argv = [*jobs.train_args(TrainSettings(run="big", student="smollm2-135m", batch_size=4096), ws),
            "--micro-batches", "1"]
    est = jobs.estimate_memory(argv, ws)
    assert est is not None and est.need > 100 * 2**30 and not est.fits
    with pytest.raises(JobRefused, match=r"would need about [\d.]+ GB.*batch 4096.*available"):
        jobs.check_memory(argv, ws)
    small = jobs.train_args(TrainSettings(run="small", student="smollm2-135m", batch_size=1), ws)
    assert jobs.estimate_memory(small, ws).need < est.need / 100


def test_the_train_estimate_counts_one_forward_pass(ws):
    argv = jobs.train_args(TrainSettings(run="t", student="smollm2-135m", batch_size=16), ws)
    default, whole = jobs.estimate_memory(argv, ws), jobs.estimate_memory([*argv, "--micro-batches", "1"], ws)
    assert "batch 16 in 4 forward passes of 4" in default.basis and "forward passes" not in whole.basis
    assert default.need < whole.need


def test_the_reflect_estimate_counts_one_micro_batch(ws):
    source = ws.run_dir("p1")
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"student": "smollm2-135m"}))
    base = [sys.executable, "-m", "tinythinker", "reflect", "--from", str(source), "--batch-size", "32"]
    default, whole = jobs.estimate_memory(base, ws), jobs.estimate_memory([*base, "--micro-batches", "1"], ws)
    assert "in 8 micro-batches of 4" in default.basis and "micro-batches" not in whole.basis
    assert default.need < whole.need / 2


def _finished_job(ws, run: str, argv: list[str], peak_rss: int) -> jobs.Job:
    """The record of an earlier phase-1 job that ended cleanly at `peak_rss`."""
    old = jobs.Job(run_dir=ws.run_dir(run), pid=1, argv=jobs.runner_argv(argv), kind="phase 1", started=1.0,
                   finished=2.0, returncode=0, peak_rss=peak_rss)
    jobs.job_dir(old.run_dir).mkdir(parents=True)
    jobs._save(old)
    return old


def test_a_measured_peak_replaces_the_formula(ws):
    argv = jobs.train_args(TrainSettings(run="m1", student="smollm2-135m", batch_size=8), ws)
    _finished_job(ws, "m1", argv, 3 * 2**30)
    again = jobs.train_args(TrainSettings(run="m2", student="smollm2-135m", batch_size=8), ws)
    est = jobs.estimate_memory(again, ws)
    assert est.measured and est.need == int(3 * 2**30 * 1.05) and "measured" in est.basis


def test_a_measured_peak_is_only_reused_for_the_same_memory_settings(ws):
    argv = jobs.train_args(TrainSettings(run="m1", student="smollm2-135m", batch_size=8), ws)
    old = _finished_job(ws, "m1", argv, 9 * 2**30)
    # the same student and batch per forward, but accumulating over 4 of them: the old peak is not reused
    smaller = jobs.train_args(TrainSettings(run="m2", student="smollm2-135m", batch_size=8, grad_accum=4), ws)
    est = jobs.estimate_memory(smaller, ws)
    assert not est.measured and "estimate" in est.basis
    for extra in (["--grad-accum", "4"], ["--gradient-checkpointing"], ["--max-source-length", "128"],
                  ["--micro-batches", "2"]):
        assert jobs._job_key(jobs.runner_argv(argv + extra)) != jobs._job_key(old.argv), extra
    assert jobs._job_key(jobs.runner_argv(argv)) == jobs._job_key(old.argv)


def test_a_reused_run_name_is_refused_with_the_config_diff(ws):
    settings = TrainSettings(run="p1", student="smollm2-135m", lr=5e-5, limit=10)
    argv = jobs.train_args(settings, ws)
    planned = jobs.planned_config(settings, argv)
    assert jobs.check_run(ws.run_dir("p1"), planned) is None  # a new run
    run = ws.run_dir("p1")
    run.mkdir()
    # what the child writes (Phase1Config.resolved()): the same keys, plus ones the app does not set
    (run / "config.json").write_text(json.dumps({**planned, "lr_scheduler": "cosine", "order": "interval"}))
    assert jobs.check_run(run, planned).startswith("restarting")  # same settings, not finished: resumes
    other = TrainSettings(run="p1", student="smollm2-135m", lr=1e-4, limit=10)
    with pytest.raises(JobRefused, match=r"other settings \(lr: 5e-05 -> 0.0001\)"):
        jobs.check_run(run, jobs.planned_config(other, jobs.train_args(other, ws)))
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "end", "step": 3}) + "\n")
    with pytest.raises(JobRefused, match="already finished"):
        jobs.check_run(run, planned)


def test_a_new_job_on_a_run_keeps_the_earlier_record(ws):
    first = _wait(jobs.start([sys.executable, "-c", "pass"], ws.run_dir("r"), kind="test"))
    second = _wait(jobs.start([sys.executable, "-c", "raise SystemExit(3)"], ws.run_dir("r"), kind="test"))
    assert jobs.status(second).state == jobs.FAILED
    kept = list(jobs.job_dir(ws.run_dir("r")).glob("job-*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["returncode"] == first.returncode == 0


def test_hub_ids_get_the_hub_message_offline(ws, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(jobs.WorkspaceError, match="Hugging Face hub id.*HF_HUB_OFFLINE"):
        jobs.resolve_student("gpt2", ws)
    with pytest.raises(jobs.WorkspaceError, match="outside the workspace"):
        jobs.resolve_student("../../etc", ws)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert jobs.resolve_student("gpt2", ws) == "gpt2"
    assert jobs.resolve_student("HuggingFaceTB/SmolLM2-135M", ws) == "HuggingFaceTB/SmolLM2-135M"


def test_runner_argv_wraps_only_tinythinker_commands():
    argv = [sys.executable, "-m", "tinythinker", "train", "--run", "x"]
    assert jobs.runner_argv(argv) == [sys.executable, "-m", "tinythinker.jobs", "train", "--run", "x"]
    assert jobs.runner_argv(["echo", "hi"]) == ["echo", "hi"]
    assert jobs.Job(Path("r"), 1, jobs.runner_argv(argv), "k", 0.0).command == "train"
