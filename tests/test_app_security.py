"""The app's safety rails without a browser: path fields stay in the workspace, job commands are argument lists
built from validated settings, the default bind address is loopback."""

import os
import sys
import time
from pathlib import Path

import pytest

import app as app_module
from tinythinker import jobs
from tinythinker.jobs import ReflectSettings, TrainSettings
from tinythinker.workspace import ANNOTATIONS, DATA, RUNS, Workspace, WorkspaceError


@pytest.fixture
def ws(tmp_path, data_dir):
    runs = tmp_path / "runs"
    (runs / "p1" / "best").mkdir(parents=True)
    (tmp_path / "annotations").mkdir()
    return Workspace(runs_dir=runs, db=tmp_path / "annotations" / "t.db", data_dir=data_dir)


@pytest.mark.parametrize("kind", [DATA, RUNS, ANNOTATIONS])
@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "../../../../../../etc/shadow",
                                 "p1/../../../etc/passwd", "~/.ssh/id_rsa", "runs/\x00x"])
def test_paths_outside_the_workspace_are_refused(ws, kind, bad):
    with pytest.raises(WorkspaceError):
        ws.resolve(bad, kind, field="checkpoint", must_exist=False)


def test_symlink_out_of_the_workspace_is_refused(ws, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (ws.runs_dir / "sneaky").symlink_to(outside)
    with pytest.raises(WorkspaceError, match="outside"):
        ws.resolve("sneaky", RUNS)


def test_paths_inside_resolve(ws, data_dir, monkeypatch):
    assert ws.resolve("p1/best", RUNS) == ws.runs_dir / "p1" / "best"
    assert ws.resolve(str(ws.runs_dir / "p1"), RUNS) == ws.runs_dir / "p1"
    monkeypatch.chdir(ws.runs_dir.parent)
    assert ws.resolve("runs/p1/best", RUNS) == ws.runs_dir / "p1" / "best"
    some_file = next(p for p in data_dir.rglob("*") if p.is_file())
    assert ws.resolve(some_file, DATA) == some_file.resolve()
    with pytest.raises(WorkspaceError, match="does not exist"):
        ws.resolve("nope", RUNS)


def test_train_args_are_a_validated_list(ws):
    argv = jobs.train_args(TrainSettings(run="r1", student="p1/best", limit=10, eval_limit=5, max_steps=3), ws)
    assert argv[:4] == [sys.executable, "-m", "tinythinker", "train"]
    assert all(isinstance(a, str) for a in argv)
    assert argv[argv.index("--run") + 1] == str(ws.runs_dir / "r1")
    assert argv[argv.index("--student") + 1] == str(ws.runs_dir / "p1" / "best")
    assert argv[argv.index("--max-steps") + 1] == "3"
    assert "--data-dir" in argv
    assert "--restrict-answer" not in argv  # "free", the paper's decoding, by default
    assert "--cross-attention-lr-scale" not in argv and "--lora-r" not in argv  # full fine-tuning by default
    argv = jobs.train_args(TrainSettings(run="r1", lora_r=16.0), ws)  # gr.Number hands over a float
    assert argv[argv.index("--lora-r") + 1] == "16"
    assert jobs.planned_config(TrainSettings(run="r1", lora_r=16), argv)["lora_r"] == 16
    argv = jobs.train_args(TrainSettings(run="r1", cross_attention_lr_scale=10), ws)
    assert argv[argv.index("--cross-attention-lr-scale") + 1] == "10.0"
    for mode, flags in ((True, ["--restrict-answer", "constrain"]), ("constrain", ["--restrict-answer", "constrain"]),
                        ("score", ["--restrict-answer", "score"]), (False, [])):
        argv = jobs.train_args(TrainSettings(run="r1", restrict_answer=mode), ws)
        assert [a for a in argv if a in ("--restrict-answer", "constrain", "score")] == flags


@pytest.mark.parametrize("field,value", [
    ("run", "x; touch /tmp/pwned"), ("run", "../escape"), ("run", "a/b"), ("run", "$(id)"), ("run", ""),
    ("data", "csqa && ls"), ("stage_type", "summarize; id"), ("student", "../../etc"),
    ("student", "/etc/passwd"), ("interval", "3; rm -rf /"), ("interval", 0), ("epochs", "1e9999"),
    ("epochs", "nan"), ("lr", "`id`"), ("limit", "10 --max-steps 1"), ("batch_size", True), ("seed", 1.5),
    ("answer_format", "letter --lr 9"), ("restrict_answer", "yes; id"), ("restrict_answer", "score --lr 9"), ("restrict_answer", 1),
    ("cross_attention_lr_scale", "10 --lr 9"), ("cross_attention_lr_scale", 0), ("cross_attention_lr_scale", "nan"), ("warmup_steps", -1),
    ("lora_r", -4), ("lora_r", "16 --lr 9"), ("lora_r", 2.5),
])
def test_train_args_reject_injected_values(ws, field, value):
    settings = TrainSettings(run="ok")
    setattr(settings, field, value)
    with pytest.raises(WorkspaceError):
        jobs.train_args(settings, ws)


def test_reflect_args(ws):
    argv = jobs.reflect_args(ReflectSettings(run="p2", from_run="p1", iterations=2), ws)
    assert argv[3] == "reflect" and argv[argv.index("--from") + 1] == str(ws.runs_dir / "p1")
    assert "--lora-r" not in argv
    argv = jobs.reflect_args(ReflectSettings(run="p2", from_run="p1", lora_r=8), ws)
    assert argv[argv.index("--lora-r") + 1] == "8"
    for bad in ("../../etc", "/tmp", "p1; id"):
        with pytest.raises(WorkspaceError):
            jobs.reflect_args(ReflectSettings(run="p2", from_run=bad), ws)
    # A shipped phase-1 student goes by its name; a shipped reflected one is not a phase-1 source.
    argv = jobs.reflect_args(ReflectSettings(run="p2", from_run="tinythinker-smollm2-p1-equal", teacher_fill=False), ws)
    assert argv[argv.index("--from") + 1] == "tinythinker-smollm2-p1-equal" and "--no-teacher-fill" in argv
    assert "--no-teacher-fill" not in jobs.reflect_args(ReflectSettings(run="p2", from_run="p1"), ws)
    with pytest.raises(WorkspaceError):
        jobs.reflect_args(ReflectSettings(run="p2", from_run="tinythinker-smollm2-reflected"), ws)
    with pytest.raises(WorkspaceError, match="teacher fill"):
        jobs.reflect_args(ReflectSettings(run="p2", from_run="p1", teacher_fill="no"), ws)
    est = jobs.estimate_memory(jobs.reflect_args(ReflectSettings(run="p2", from_run="tinythinker-smollm2-p1-equal"),
                                                 ws), ws)
    assert est is not None and "135M" in est.basis


def test_start_refuses_a_shell_string(ws):
    with pytest.raises(TypeError):
        jobs.start("echo hi; id", ws.runs_dir / "x", kind="test")


def test_job_runs_logs_and_cancels(ws):
    done = jobs.start([sys.executable, "-c", "print('hello from the job')"], ws.run_dir("j1"), kind="test")
    deadline = time.time() + 20
    while jobs.is_running(done) and time.time() < deadline:
        time.sleep(0.05)
    assert done.returncode == 0 and "hello from the job" in jobs.log_tail(done)
    # A new app process sees the finished job from disk.
    assert jobs.load_job(ws.run_dir("j1")).returncode == 0

    slow = jobs.start([sys.executable, "-c", "import time; print('0%|', flush=True); time.sleep(60)"],
                      ws.run_dir("j2"), kind="test")
    assert jobs.is_running(slow)
    with pytest.raises(WorkspaceError, match="already has a running job"):
        jobs.start([sys.executable, "-c", "pass"], ws.run_dir("j2"), kind="test")
    jobs.cancel(slow, grace_s=5)
    assert not jobs.is_running(slow) and slow.cancelled
    with pytest.raises(ProcessLookupError):
        os.kill(slow.pid, 0)
    assert [j.name for j in jobs.list_jobs(ws)] == ["j2", "j1"]


def test_cli_binds_loopback_by_default_and_parses_auth():
    args = app_module.build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.auth is None and not args.share
    assert app_module.build_parser().parse_args(["--auth", "ann:s3cret"]).auth == ("ann", "s3cret")
    for bad in ("nopassword", ":x", "x:"):
        with pytest.raises(SystemExit):
            app_module.build_parser().parse_args(["--auth", bad])


def test_quick_run_is_small(ws):
    s = jobs.quick_run_settings("quick-test", "minilm-bert2bert")
    argv = jobs.train_args(s, ws)
    assert s.limit <= 500 and s.max_steps and argv[argv.index("--student") + 1] == "minilm-bert2bert"
    # the recipe under which the default student learned (bench/RESULTS.md)
    assert argv[argv.index("--answer-format") + 1] == "text_letter"
    assert argv[argv.index("--restrict-answer") + 1] == "score"
    assert argv[argv.index("--cross-attention-lr-scale") + 1] == "10.0"
    smol = jobs.train_args(jobs.quick_run_settings("q2"), ws)  # the default student
    assert smol[smol.index("--student") + 1] == "smollm2-135m" and "--cross-attention-lr-scale" not in smol
    assert smol[smol.index("--lr") + 1] == "5e-05"
    assert Path(argv[argv.index("--run") + 1]).parent == ws.runs_dir


def test_job_choices_match_phase2():
    from tinythinker import phase2

    assert set(jobs.DPO_STAGE_TYPES) == set(phase2.DPO_STAGE_TYPES)
    assert tuple(jobs.PAIR_MODES) == tuple(phase2.PAIR_MODES)
    from tinythinker import phase1

    assert tuple(jobs.ANSWER_FORMATS) == tuple(phase1.ANSWER_FORMATS)


def test_progress_reads_the_trainer_bar_and_reflect_iterations(ws):
    fake = ws.runs_dir / ".jobs" / "r"
    fake.mkdir(parents=True)
    job = jobs.Job(run_dir=ws.runs_dir / "r", pid=1, argv=["python", "-m", "tinythinker", "train"], kind="t",
                   started=0.0, finished=1.0, returncode=0)
    assert jobs.progress(job) is None
    (fake / "job.log").write_text("Loading weights: 100%|#####| 99/99 [00:00]\n"
                                  "  10%|#   | 12/120 [00:05<00:40]\r  25%|##  | 30/120 [00:10<00:30]\n"
                                  "Loading weights: 100%|#####| 99/99 [00:00]\n")
    assert jobs.progress(job) == 0.25
    job.argv = ["python", "-m", "tinythinker", "reflect", "--iterations", "4"]
    (fake / "job.log").write_text("t step 5/10\nt iteration 1 done: pairs 3\nt step 5/10")
    assert jobs.progress(job) == (1 + 0.5) / 4


def test_train_args_order_and_accumulation(ws):
    from tinythinker.schedule import ORDERS

    assert jobs.ORDERS == ORDERS  # jobs keeps a torch-free copy
    settings = TrainSettings(run="p1", student="smollm2-135m", order="equal", grad_accum=4, batch_size=4)
    argv = jobs.train_args(settings, ws)
    assert argv[argv.index("--order") + 1] == "equal" and argv[argv.index("--grad-accum") + 1] == "4"
    planned = jobs.planned_config(settings, argv)
    assert (planned["order"], planned["grad_accum"]) == ("equal", 4)
    plain = jobs.train_args(TrainSettings(run="p1", student="smollm2-135m"), ws)
    assert "--order" not in plain and "--grad-accum" not in plain
    for bad in (TrainSettings(run="p1", order="random"), TrainSettings(run="p1", grad_accum=0)):
        with pytest.raises(WorkspaceError):
            jobs.train_args(bad, ws)
