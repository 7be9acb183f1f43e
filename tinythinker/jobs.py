"""Training jobs as child processes: validated settings -> an argument list -> `python -m tinythinker ...`.

Never a shell string: a web UI that passed training settings through `shell=True` had a command-injection CVE.
Every value is checked (type, range, alphabet) before it becomes one element of argv, and paths are resolved
inside the workspace. A job's state lives on disk beside its run (`<runs>/.jobs/<run>/job.json` and `job.log`,
outside the run folder, which the training command wants to itself) so a page reload, or a new app process, finds
running jobs again.

What a job says about itself (`status`): running (with an ETA measured from its own steps), finished, cancelled
(and which checkpoint it kept), killed by a signal it did not ask for (with its peak memory: the kernel's
out-of-memory killer sends SIGKILL), or failed (with the last line of its log). Jobs started here run through this
module's own entry (`python -m tinythinker.jobs <command> ...`), which turns Cancel (SIGTERM) into "save a
checkpoint at the end of the current step, then stop" for phase-1 training, so a cancelled run resumes where it
stopped. Before a job starts, `check_memory` refuses one whose estimated peak memory does not fit in what the
machine has available, and `check_run` refuses a run name already used with other settings (with the diff).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tinythinker import DEFAULT_STUDENT
from tinythinker.stages import ANSWER_FORMATS, ANSWER_MODES, STAGE_TYPES, answer_mode
from tinythinker.workspace import RUNS, Workspace, WorkspaceError, check_name

BENCHMARKS = ("csqa", "obqa", "strategyqa")
NAMED_STUDENTS = ("minilm-bert2bert", "smollm2-135m")
# The same choices as tinythinker.phase2 (a test keeps them equal): importing phase2 here would load the whole
# training stack (transformers.Trainer) at app start-up just for two tuples.
DPO_STAGE_TYPES = ("recall", "analyze", "recall_analyze")
PAIR_MODES = ("auto", "curated", "both")
ORDERS = ("interval", "equal", "mixed")  # schedule.ORDERS, which imports torch; a test keeps them equal
JOBS, JOB_FILE, JOB_LOG = ".jobs", "job.json", "job.log"


@dataclass
class TrainSettings:
    """Phase 1 (`python -m tinythinker train`)."""

    run: str
    data: str = "csqa"
    student: str = DEFAULT_STUDENT
    stage_type: str = "recall_analyze_summarize"
    interval: int = 20
    epochs: float = 1.0
    limit: int | None = 2000
    eval_limit: int | None = 200
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 5e-4  # phase 1's default (the paper's scripts)
    seed: int = 0
    warmup_steps: int = 0
    cross_attention_lr_scale: float = 1.0  # bert2bert only: the new cross-attention's learning rate multiplier
    lora_r: int = 0  # LoRA rank (peft); 0 = full fine-tuning
    order: str = "interval"  # `schedule.ORDERS`: the paper's interval schedule, or equal steps per stage
    grad_accum: int = 1  # optimizer step = batch_size x grad_accum examples (a small batch keeps memory low)
    answer_format: str = "letter"  # `stages.ANSWER_FORMATS`; text_letter / letter_text add the option's words
    # Summarize at evaluation: "free" (the paper), "constrain" or "score" (`stages.ANSWER_MODES`); a bool as in
    # Phase1Config (True = "constrain")
    restrict_answer: bool | str = "free"


@dataclass
class ReflectSettings:
    """Phase 2 (`python -m tinythinker reflect`)."""

    run: str
    from_run: str
    iterations: int = 3
    samples: int = 10
    stage_type: str = "recall_analyze"
    limit: int | None = 500
    eval_limit: int | None = 200
    beta: float = 0.5
    alpha: float = 0.5
    lr: float = 5e-6  # phase 2's default (the paper's run_dpo.sh)
    seed: int = 0
    pairs: str = "auto"  # auto | curated (labelled in the Annotate tab) | both
    refuse_failing_pairs: bool = False  # with curated pairs: refuse to start when a pair check fails
    lora_r: int = 0  # LoRA rank for the DPO updates; 0 = full fine-tuning
    teacher_fill: bool = True  # the paper's: teacher recalls take the chosen side where wrong samples outnumber


def _bool(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise WorkspaceError(f"{field}: expected true or false, got {value!r}")
    return value


def _int(value, field: str, lo: int, hi: int, optional: bool = False) -> int | None:
    if optional and (value is None or str(value).strip() in ("", "0", "None")):
        return None
    # bool is an int subclass, and floats like 2.5 or strings like "3; rm -rf /" must not slip through.
    if isinstance(value, bool):
        raise WorkspaceError(f"{field}: expected an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    if not isinstance(value, int):
        raise WorkspaceError(f"{field}: expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise WorkspaceError(f"{field}: {value} is outside [{lo}, {hi}]")
    return value


def _float(value, field: str, lo: float, hi: float) -> float:
    if isinstance(value, bool):
        raise WorkspaceError(f"{field}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise WorkspaceError(f"{field}: expected a number, got {value!r}") from None
    if not (lo <= number <= hi):  # also rejects nan
        raise WorkspaceError(f"{field}: {value} is outside [{lo}, {hi}]")
    return number


def _choice(value, field: str, choices) -> str:
    if value not in choices:
        raise WorkspaceError(f"{field}: {value!r} is not one of {', '.join(choices)}")
    return value


# A Hugging Face hub id: `name` or `owner/name` (no `..`, no leading `/` or `.`): what load_student tries last.
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_student(value: str, ws: Workspace, field: str = "student", extra_names=()) -> str:
    """What `load_student` is given for a typed student: a named default (or one of `extra_names`, e.g. shipped
    models), a folder inside the runs folder, or else a hub id. A path outside the workspace is refused; a hub id
    while the hub is disabled gets the hub's message at once instead of failing a minute into a job."""
    value = (value or "").strip()
    if value in NAMED_STUDENTS or value in extra_names:
        return value
    try:
        return str(ws.resolve(value, RUNS, field=field))
    except WorkspaceError as e:
        if "does not exist" not in str(e) or not _HUB_ID_RE.fullmatch(value) or ".." in value:
            raise
    if hub_offline():
        raise WorkspaceError(
            f"{field}: {value!r} is not a folder in {ws.runs_dir}, so it would be a Hugging Face hub id, and the "
            f"hub is disabled here (HF_HUB_OFFLINE=1). Offline, pick {', '.join(NAMED_STUDENTS)}, a shipped "
            "model or a trained checkpoint in runs/; online, unset HF_HUB_OFFLINE to load hub ids")
    return value


def _student(value: str, ws: Workspace) -> str:
    from tinythinker.shipped import list_shipped

    return resolve_student(value, ws, extra_names=[m.name for m in list_shipped()])


def _opt(flag: str, value) -> list[str]:
    return [] if value is None else [flag, str(value)]


def train_args(s: TrainSettings, ws: Workspace) -> list[str]:
    """argv for a phase-1 run, each element validated."""
    argv = [
        sys.executable, "-m", "tinythinker", "train",
        "--data", _choice(s.data, "data", BENCHMARKS),
        "--student", _student(s.student, ws),
        "--stage-type", _choice(s.stage_type, "stage type", tuple(STAGE_TYPES)),
        "--interval", str(_int(s.interval, "interval", 1, 100_000)),
        "--epochs", str(_float(s.epochs, "epochs", 0.01, 1000)),
        "--batch-size", str(_int(s.batch_size, "batch size", 1, 4096)),
        "--lr", str(_float(s.lr, "learning rate", 1e-9, 1.0)),
        "--seed", str(_int(s.seed, "seed", 0, 2**31 - 1)),
        "--warmup-steps", str(_int(s.warmup_steps, "warm-up steps", 0, 10_000_000)),
        "--answer-format", _choice(s.answer_format, "answer format", ANSWER_FORMATS),
        "--run", str(ws.run_dir(s.run)),
    ]
    try:
        mode = answer_mode(s.restrict_answer)
    except ValueError:
        raise WorkspaceError(f"restrict answer: expected one of {', '.join(ANSWER_MODES)}, "
                             f"got {s.restrict_answer!r}") from None
    argv += [] if mode == "free" else ["--restrict-answer", mode]
    scale = _float(s.cross_attention_lr_scale, "cross-attention lr scale", 0.001, 1000)
    argv += [] if scale == 1.0 else ["--cross-attention-lr-scale", str(scale)]
    argv += _opt("--limit", _int(s.limit, "limit", 1, 10_000_000, optional=True))
    argv += _opt("--eval-limit", _int(s.eval_limit, "eval limit", 1, 10_000_000, optional=True))
    argv += _opt("--max-steps", _int(s.max_steps, "max steps", 1, 10_000_000, optional=True))
    argv += _opt("--lora-r", _int(s.lora_r, "LoRA rank", 1, 4096, optional=True))
    order = _choice(s.order, "order", ORDERS)
    argv += [] if order == "interval" else ["--order", order]
    accum = _int(s.grad_accum, "gradient accumulation", 1, 4096)
    argv += [] if accum == 1 else ["--grad-accum", str(accum)]
    argv += _opt("--data-dir", ws.data_dir)
    return argv


def reflect_args(s: ReflectSettings, ws: Workspace) -> list[str]:
    """argv for a phase-2 run, each element validated."""
    from tinythinker.shipped import PHASE1, get_shipped

    shipped = get_shipped(str(s.from_run or "").strip())
    # A shipped phase-1 student goes by its name (reflect finds it, and its data, under demo/models/).
    source = shipped.name if shipped is not None and shipped.role == PHASE1 else ws.resolve(s.from_run, RUNS,
                                                                                          field="from run")
    argv = [
        sys.executable, "-m", "tinythinker", "reflect",
        "--from", str(source),
        "--iterations", str(_int(s.iterations, "iterations", 1, 100)),
        "--samples", str(_int(s.samples, "samples", 1, 1000)),
        "--stage-type", _choice(s.stage_type, "stage type", tuple(DPO_STAGE_TYPES)),
        "--pairs", _choice(s.pairs, "pairs", PAIR_MODES),
        "--beta", str(_float(s.beta, "beta", 1e-6, 100)),
        "--alpha", str(_float(s.alpha, "alpha", 0, 100)),
        "--lr", str(_float(s.lr, "learning rate", 1e-12, 1.0)),
        "--seed", str(_int(s.seed, "seed", 0, 2**31 - 1)),
        "--run", str(ws.run_dir(s.run)),
        "--db", str(ws.db),
    ]
    argv += _opt("--limit", _int(s.limit, "limit", 1, 10_000_000, optional=True))
    argv += _opt("--eval-limit", _int(s.eval_limit, "eval limit", 1, 10_000_000, optional=True))
    argv += _opt("--lora-r", _int(s.lora_r, "LoRA rank", 1, 4096, optional=True))
    if _bool(s.refuse_failing_pairs, "refuse failing pairs"):
        argv.append("--refuse-failing-pairs")
    if not _bool(s.teacher_fill, "teacher fill"):
        argv.append("--no-teacher-fill")
    return argv  # the data (and its folder) come from the phase-1 run's config


@dataclass
class GenerateSettings:
    """Traces for the Annotate queue: each model on the first `limit` questions of a split, greedy (samples = 1)
    or `samples` sampled traces per question, imported into the store under the model's name."""

    models: list[str]
    data: str = "csqa"
    split: str = "validation"
    limit: int = 20
    samples: int = 1
    temperature: float = 0.7
    seed: int = 0
    name: str | None = None  # the job's name (a folder under runs/.jobs/)


def generate_args(s: GenerateSettings, ws: Workspace, shipped=None) -> list[str]:
    """argv for a traces job (`python -m tinythinker.jobs generate ...`), each element validated. Each model runs
    with the stage type and answer mode it was trained with (`shipped.answer_settings`)."""
    from tinythinker import shipped as shipped_mod

    shipped = shipped_mod.list_shipped() if shipped is None else shipped
    by_name = {m.name: m for m in shipped}
    models = [m for m in (s.models or []) if m]
    if not models:
        raise WorkspaceError("models: pick at least one model to generate traces with")
    if len(models) > 8:
        raise WorkspaceError(f"models: at most 8 at once, got {len(models)}")
    name = check_name(s.name or time.strftime("traces-%Y%m%d-%H%M%S"), "job name")
    argv = [sys.executable, "-m", "tinythinker.jobs", "generate"]
    for value in models:
        if value in by_name:
            path, store_name = str(by_name[value].folder), value
        else:
            path = resolve_student(value, ws, field="model")
            store_name = ws.relative(Path(path)) if Path(path).is_dir() else path
        settings = shipped_mod.answer_settings(path, ws.runs_dir, shipped)
        argv += ["--model", path, "--name", store_name, "--stage-type", settings["stage_type"],
                 "--restrict-answer", settings["restrict_answer"]]
    samples = _int(s.samples, "samples per question", 1, 50)
    argv += [
        "--data", _choice(s.data, "benchmark", BENCHMARKS),
        "--split", _choice(s.split, "split", ("validation", "train", "test")),
        "--limit", str(_int(s.limit, "questions", 1, 100_000)),
        "--samples", str(samples),
        "--temperature", str(_float(s.temperature, "temperature", 0.05, 5.0)),
        "--seed", str(_int(s.seed, "seed", 0, 2**31 - 1)),
        "--db", str(ws.db),
        "--out-dir", str(job_dir(ws.runs_dir / name)),
    ]
    argv += _opt("--data-dir", ws.data_dir)
    return argv


@dataclass
class Job:
    run_dir: Path
    pid: int
    argv: list[str]
    kind: str
    started: float
    finished: float | None = None
    returncode: int | None = None
    cancelled: bool = False
    cancel_requested: float | None = None  # when Cancel sent SIGTERM (the job may still be saving)
    peak_rss: int | None = None  # bytes: the highest resident memory seen (VmHWM) or reported at exit
    memory_estimate: int | None = None  # bytes, what check_memory expected before it started

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def command(self) -> str:
        """train, reflect, generate (the word after the module in argv)."""
        for i, a in enumerate(self.argv):
            if a in ("tinythinker", "tinythinker.jobs") and i > 0 and self.argv[i - 1] == "-m":
                return self.argv[i + 1] if i + 1 < len(self.argv) else ""
        return ""

    @property
    def log_path(self) -> Path:
        return job_dir(self.run_dir) / JOB_LOG

    def to_json(self) -> str:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        return json.dumps(d, indent=1)


def job_dir(run_dir: Path) -> Path:
    return Path(run_dir).parent / JOBS / Path(run_dir).name


# Popen objects of the jobs this process started: needed to reap them (and read their exit code and peak memory)
# as they end. `_REAPED` keeps what wait4 returned, for every Job object of the same pid; one lock for both.
_CHILDREN: dict[int, subprocess.Popen] = {}
_REAPED: dict[int, tuple[int, int]] = {}
_LOCK = threading.RLock()

# SIGTERM's exit code (128 + 15): what a job cancelled here exits with once it has saved what it can.
CANCELLED_EXIT = 128 + signal.SIGTERM


def runner_argv(argv: list[str]) -> list[str]:
    """`python -m tinythinker <command> ...` run through this module's entry (graceful cancel, see `_main`)."""
    if len(argv) > 3 and argv[1:3] == ["-m", "tinythinker"]:
        return [argv[0], "-m", "tinythinker.jobs", *argv[3:]]
    return list(argv)


def start(argv: list[str], run_dir: Path, kind: str, memory_estimate: int | None = None) -> Job:
    """Start `argv` (a list, no shell) in its own session so it outlives a page reload or an app restart.
    A `python -m tinythinker ...` command runs through `runner_argv`. An earlier finished job of the same run is
    kept beside it as job-<started>.json."""
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise TypeError("a job's command must be a list of strings")
    run_dir = Path(run_dir)
    existing = load_job(run_dir)
    if existing is not None and is_running(existing):
        raise WorkspaceError(f"run {run_dir.name!r} already has a running job (pid {existing.pid})")
    folder = job_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if existing is not None:
        os.replace(folder / JOB_FILE, folder / f"job-{int(existing.started)}.json")
    argv = runner_argv(argv)
    log = open(folder / JOB_LOG, "ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with _LOCK:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, cwd=Path.cwd())
        _CHILDREN[proc.pid] = proc
        _REAPED.pop(proc.pid, None)  # a reused pid: what an earlier child of that pid left is not this one's
    log.close()
    job = Job(run_dir=run_dir, pid=proc.pid, argv=argv, kind=kind, started=time.time(),
              memory_estimate=memory_estimate)
    _save(job)
    return job


def _save(job: Job) -> None:
    """Write job.json atomically. A Cancel recorded on disk by another Job object of the same process (the app
    loads one per request) is never overwritten by a stale copy."""
    with _LOCK:
        path = job_dir(job.run_dir) / JOB_FILE
        if path.is_file():
            try:
                disk = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                disk = {}
            if disk.get("pid") == job.pid and disk.get("cancelled"):
                job.cancelled = True
                job.cancel_requested = job.cancel_requested or disk.get("cancel_requested")
        _write(job)


def _write(job: Job) -> None:
    folder = job_dir(job.run_dir)
    tmp = folder / f"{JOB_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(job.to_json())
    os.replace(tmp, folder / JOB_FILE)


_JOB_FIELDS = {f.name for f in fields(Job)}


def load_job(run_dir: Path) -> Job | None:
    path = job_dir(run_dir) / JOB_FILE
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    d["run_dir"] = Path(d["run_dir"])
    return Job(**{k: v for k, v in d.items() if k in _JOB_FIELDS})


def is_running(job: Job) -> bool:
    return refresh(job).returncode is None and job.finished is None


def _vm_hwm(pid: int) -> int | None:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reap(pid: int) -> tuple[int, int] | None:
    """(exit code, peak RSS in bytes) of an ended child of this process, else None while it runs. wait4 gives the
    peak memory the kernel measured, which outlives the process (a negative code is the signal that ended it)."""
    with _LOCK:
        if pid in _REAPED:
            return _REAPED[pid]
        proc = _CHILDREN.get(pid)
        if proc is None:
            return None
        try:
            got, status, usage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (Popen itself): only its exit code is left
            code = proc.returncode if proc.returncode is not None else -1
            _REAPED[pid] = (code, 0)
            _CHILDREN.pop(pid, None)
            return _REAPED[pid]
        if got == 0:
            return None
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code  # Popen must not wait for it again
        _REAPED[pid] = (code, int(usage.ru_maxrss) * 1024)
        _CHILDREN.pop(pid, None)
        return _REAPED[pid]


def refresh(job: Job) -> Job:
    """Update a job's exit status (and peak memory) from the process table; persist it once it has ended."""
    if job.finished is not None:
        return job
    reaped = _reap(job.pid) if (job.pid in _CHILDREN or job.pid in _REAPED) else None
    if reaped is None and (job.pid in _CHILDREN or _pid_alive(job.pid, job.argv)):
        peak = _vm_hwm(job.pid)
        if peak is not None and peak > (job.peak_rss or 0):
            job.peak_rss = peak
            _save(job)
        return job
    if reaped is not None:
        code, peak = reaped
        job.peak_rss = max(job.peak_rss or 0, peak) or None
    else:
        saved = load_job(job.run_dir)  # another app process may have seen it end
        if saved is not None and saved.pid == job.pid and saved.finished is not None:
            job.__dict__.update(saved.__dict__)
            return job
        code = -1  # started by an earlier app process; its exit code is gone with it
    job.returncode = code
    job.finished = time.time()
    if code == CANCELLED_EXIT and job.cancel_requested is not None:
        job.cancelled = True
    _save(job)
    return job


def _pid_alive(pid: int, argv: list[str]) -> bool:
    # A pid can be reused after a reboot or a long time: also check the command line is still ours.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00")
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    if stat and stat[0] == "Z":
        return False
    return [c.decode(errors="replace") for c in cmdline if c] == argv


def cancel(job: Job, grace_s: float = 5.0, wait: bool = True) -> Job:
    """Ask the job to stop: SIGTERM to its process group. A phase-1 job run through `runner_argv` then saves a
    checkpoint at the end of its current step and exits (a rerun of the same run resumes there); other jobs stop
    at once, keeping what they had finished (phase 2: whole iterations). With `wait`, SIGKILL follows after
    `grace_s` if it has not ended; without, this returns at once and `status` says it is stopping."""
    if not is_running(job):
        return job
    job.cancelled = True
    job.cancel_requested = time.time()
    _save(job)
    try:
        os.killpg(job.pid, signal.SIGTERM)
    except ProcessLookupError:
        return refresh(job)
    if not wait:
        return job
    deadline = time.time() + grace_s
    while time.time() < deadline:
        if not is_running(job):
            return job
        time.sleep(0.1)
    return kill(job)


def kill(job: Job, timeout_s: float = 10.0) -> Job:
    """Stop now (SIGKILL to the process group): nothing more is saved; what the run had checkpointed stays."""
    if not is_running(job):
        return job
    job.cancelled = True
    job.cancel_requested = job.cancel_requested or time.time()
    _save(job)
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.time() + timeout_s
    while is_running(job) and time.time() < deadline:
        time.sleep(0.05)
    return refresh(job)


def list_jobs(ws: Workspace) -> list[Job]:
    """Every job ever started in the runs folder (the latest per run), newest first."""
    jobs = []
    if ws.runs_dir.is_dir():
        for path in (ws.runs_dir / JOBS).glob(f"*/{JOB_FILE}"):
            job = load_job(ws.runs_dir / path.parent.name)
            if job is not None:
                jobs.append(refresh(job))
    return sorted(jobs, key=lambda j: j.started, reverse=True)


# The Trainer's bar has no description ("  45%|####  | 54/120 [00:10<00:30, 1.5s/it]"), unlike model-loading bars
# ("Loading weights: 100%|...| 99/99"); phase 2's printer writes "step 12/40" and "iteration 2 done"; a traces
# job writes "generate step 12/40".
_TRAINER_BAR_RE = re.compile(r"^\s*\d{1,3}%\|[^|]*\|\s*(\d+)/(\d+)")
_BAR_TIMES_RE = re.compile(r"\[((?:\d+:)?\d+:\d+)<((?:\d+:)?\d+:\d+|\?)(?:,\s*([\d.]+)\s*(s/it|it/s))?")
_REFLECT_STEP_RE = re.compile(r"\bstep (\d+)/(\d+)\b")
_ITERATION_DONE_RE = re.compile(r"\biteration (\d+) done\b")
_CHECKPOINT_SAVED_RE = re.compile(r"cancelled: (checkpoint-\d+) saved")


def log_tail(job: Job, lines: int = 40) -> str:
    """The last lines of a job's output, with progress-bar redraws (carriage returns) collapsed."""
    if not job.log_path.is_file():
        return ""
    with open(job.log_path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64_000))
        text = f.read().decode(errors="replace")
    rows = [row.split("\r")[-1] if "\r" in row else row for row in text.split("\n")]
    rows = [r for r in rows if r.strip()]
    return "\n".join(rows[-lines:])


def progress(job: Job) -> float | None:
    """Fraction done, read from the job's log; None before it reports any step.

    Phase 1: the Trainer's bar. Phase 2: finished iterations plus the current iteration's DPO steps, over
    `--iterations`."""
    segment = None
    done_iterations = 0
    for row in log_tail(job, lines=2000).split("\n"):
        m = _TRAINER_BAR_RE.match(row) or _REFLECT_STEP_RE.search(row)
        if m and int(m.group(2)) > 0:
            segment = int(m.group(1)) / int(m.group(2))
        if (d := _ITERATION_DONE_RE.search(row)) is not None:
            done_iterations, segment = int(d.group(1)), 0.0
    if "reflect" in job.argv and "--iterations" in job.argv:
        total = int(job.argv[job.argv.index("--iterations") + 1])
        if segment is None and not done_iterations:
            return None
        return min(1.0, (done_iterations + (segment or 0.0)) / total)
    return segment


def _seconds(text: str) -> int | None:
    if text == "?":
        return None
    parts = [int(p) for p in text.split(":")]
    total = 0
    for p in parts:
        total = total * 60 + p
    return total


def eta(job: Job) -> dict[str, Any] | None:
    """The training bar's measured pace: {step, total, s_per_step, remaining_s} (None before the first step)."""
    last = None
    for row in log_tail(job, lines=400).split("\n"):
        m = _TRAINER_BAR_RE.match(row)
        if m:
            last = (row, int(m.group(1)), int(m.group(2)))
    if last is None:
        return None
    row, step, total = last
    out: dict[str, Any] = {"step": step, "total": total, "s_per_step": None, "remaining_s": None}
    t = _BAR_TIMES_RE.search(row)
    if t:
        elapsed, remaining = _seconds(t.group(1)), _seconds(t.group(2))
        if t.group(3):
            rate = float(t.group(3))
            out["s_per_step"] = rate if t.group(4) == "s/it" else (1.0 / rate if rate else None)
        elif step and elapsed is not None:
            out["s_per_step"] = elapsed / step
        if remaining is not None:
            out["remaining_s"] = remaining
        elif out["s_per_step"]:
            out["remaining_s"] = out["s_per_step"] * (total - step)
    return out


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def gigabytes(n: int | float | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GB"


# -- what a job says about itself ---------------------------------------------------------------------------

RUNNING, STOPPING, FINISHED, CANCELLED, KILLED, FAILED = "running", "stopping", "finished", "cancelled", "killed", \
    "failed"


@dataclass
class JobStatus:
    state: str  # RUNNING | STOPPING | FINISHED | CANCELLED | KILLED | FAILED
    text: str  # one line for people: what happened and what to do
    fraction: float | None = None
    checkpoint: str | None = None  # the newest complete checkpoint of the run, when it has one


def _last_checkpoint(run_dir: Path) -> Path | None:
    from tinythinker.runs import last_checkpoint

    try:
        return last_checkpoint(run_dir)
    except OSError:
        return None


def _run_ended_cleanly(run_dir: Path) -> bool:
    from tinythinker.runs import RunError, read_metrics

    try:
        return any(r.get("kind") == "end" for r in read_metrics(run_dir))
    except (RunError, OSError):
        return False


def _last_error_line(job: Job) -> str:
    rows = [r.strip() for r in log_tail(job, lines=60).split("\n") if r.strip()]
    for row in reversed(rows):
        if row.startswith("error:") or re.match(r"^[A-Za-z_.]*(Error|Exception)\b", row):
            return row[:400]
    return rows[-1][:400] if rows else ""


def memory_total() -> int | None:
    return _meminfo().get("MemTotal")


def status(job: Job) -> JobStatus:
    """What the job is doing or how it ended, in words (and the run's checkpoint where one exists)."""
    job = refresh(job)
    fraction = progress(job)
    ckpt = _last_checkpoint(job.run_dir) if job.command == "train" else None
    ckpt_name = ckpt.name if ckpt is not None else None
    peak = f"peak memory {gigabytes(job.peak_rss)}" + (
        f" of {gigabytes(memory_total())}" if memory_total() else "") if job.peak_rss else ""
    if job.finished is None:
        if job.cancel_requested is not None:
            what = ("saving a checkpoint at the end of the current step, then stopping"
                    if job.command == "train" else "stopping")
            return JobStatus(STOPPING, f"stopping: {what} (Stop now ends it at once)", fraction, ckpt_name)
        pace = eta(job)
        if pace is None:
            text = "running: starting (loading data and model)" if fraction is None else "running"
        else:
            text = f"running: step {pace['step']}/{pace['total']}"
            if pace["s_per_step"]:
                text += (f" · {pace['s_per_step']:.1f} s/step (measured) · about {duration(pace['remaining_s'])} "
                         "of training left")
        return JobStatus(RUNNING, text + (f" · {peak} so far" if peak else ""), fraction, ckpt_name)
    code = job.returncode
    if code == 0:
        return JobStatus(FINISHED, "finished" + (f" · {peak}" if peak else ""), 1.0, ckpt_name)
    if job.cancelled:
        if job.command == "train":
            kept = (f"checkpoint kept: {ckpt_name}; start the run again with the same name and settings to resume "
                    "from it" if ckpt_name else "stopped before its first checkpoint: nothing to resume from")
        elif job.command == "reflect":
            kept = "finished iterations are kept; start it again with the same settings to go on"
        else:
            kept = "traces written before it stopped are kept in its folder"
        return JobStatus(CANCELLED, f"cancelled · {kept}", fraction, ckpt_name)
    if code == -1:
        if _run_ended_cleanly(job.run_dir):
            return JobStatus(FINISHED, "finished (while no app was watching it)", 1.0, ckpt_name)
        return JobStatus(FAILED, "ended while no app was watching it, without finishing (exit status unknown); "
                         "see the log" + (f" · {ckpt_name} kept" if ckpt_name else ""), fraction, ckpt_name)
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = (" (not by Cancel: most likely the kernel's out-of-memory killer; use a smaller batch or fewer "
               "samples, or stop other jobs)" if -code == signal.SIGKILL else "")
        return JobStatus(KILLED, f"killed by {name} (signal {-code}){why}" + (f" · {peak}" if peak else "")
                         + (f" · {ckpt_name} kept" if ckpt_name else ""), fraction, ckpt_name)
    last = _last_error_line(job)
    return JobStatus(FAILED, f"failed (exit code {code})" + (f": {last}" if last else "")
                     + (f" · {peak}" if peak else ""), fraction, ckpt_name)


def run_status(run_dir: Path, finished_record: bool) -> str:
    """One word (and a little) for a run folder in a table: the state of its latest job when it has one, else
    finished / incomplete from its metrics."""
    job = load_job(run_dir)
    if job is None:
        return FINISHED if finished_record else "incomplete"
    st = status(job)
    if st.state == FINISHED or (finished_record and st.state not in (RUNNING, STOPPING)):
        return FINISHED
    if st.state == CANCELLED:
        return f"cancelled ({st.checkpoint} kept)" if st.checkpoint else CANCELLED
    if st.state == FAILED and job.returncode not in (None, -1):
        return f"failed (exit {job.returncode})"
    if st.state == KILLED:
        return f"killed ({st.text.split(' (')[0].removeprefix('killed by ')})"
    return st.state


# -- reusing a run name -------------------------------------------------------------------------------------

class JobRefused(WorkspaceError):
    """A job that would not work as asked (memory, a reused run name): refused before it starts."""


def planned_config(s: TrainSettings | ReflectSettings, argv: list[str]) -> dict[str, Any]:
    """What the child will write into config.json, for the keys the settings decide (as the CLI parses them)."""
    def flag(name, default=None, cast=str):
        if name not in argv:
            return default
        return cast(argv[argv.index(name) + 1])

    if isinstance(s, TrainSettings):
        mode = answer_mode(s.restrict_answer)
        return {
            "command": "train", "data": flag("--data"), "student": flag("--student"),
            "stage_type": flag("--stage-type"), "interval": flag("--interval", cast=int),
            "epochs": flag("--epochs", cast=float), "batch_size": flag("--batch-size", cast=int),
            "lr": flag("--lr", cast=float), "seed": flag("--seed", cast=int),
            "warmup_steps": flag("--warmup-steps", cast=int), "answer_format": flag("--answer-format"),
            "restrict_answer": False if mode == "free" else mode,
            "cross_attention_lr_scale": flag("--cross-attention-lr-scale", 1.0, float),
            "limit": flag("--limit", None, int), "eval_limit": flag("--eval-limit", None, int),
            "max_steps": flag("--max-steps", None, int), "data_dir": flag("--data-dir"),
            "lora_r": flag("--lora-r", 0, int), "order": flag("--order", "interval"),
            "grad_accum": flag("--grad-accum", 1, int),
        }
    return {
        "command": "reflect", "from_run": flag("--from"), "iterations": flag("--iterations", cast=int),
        "samples": flag("--samples", cast=int), "stage_type": flag("--stage-type"), "pairs": flag("--pairs"),
        "beta": flag("--beta", cast=float), "alpha": flag("--alpha", cast=float), "lr": flag("--lr", cast=float),
        "seed": flag("--seed", cast=int), "limit": flag("--limit", None, int),
        "eval_limit": flag("--eval-limit", None, int), "lora_r": flag("--lora-r", 0, int),
        # ReflectConfig.resolved records teacher_fill only when it is off
        **({"teacher_fill": False} if "--no-teacher-fill" in argv else {}),
    }


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every key both know whose values differ (1 and 1.0 are the same)."""
    out = []
    for key in sorted(set(old) & set(new)):
        a, b = old[key], new[key]
        if a == b or (str(a) == str(b)):
            continue
        out.append(f"{key}: {a!r} -> {b!r}")
    return out


def check_run(run_dir: Path, planned: dict[str, Any]) -> str | None:
    """Refuse (JobRefused) a run name already used for another experiment, with the config diff, or for a run
    that already finished; None for a new run, or a note for a resumable one (same settings, not finished)."""
    from tinythinker.runs import CONFIG, RunError, read_config

    run_dir = Path(run_dir)
    if not run_dir.exists():
        return None
    if not (run_dir / CONFIG).is_file():
        if any(run_dir.iterdir()):
            raise JobRefused(f"run name: {run_dir.name!r} is a folder in runs/ that is not a run (no config.json); "
                             "choose another run name")
        return None
    try:
        old = read_config(run_dir)
    except RunError as e:
        raise JobRefused(f"run name: {run_dir.name!r} is taken and its config cannot be read ({e})") from None
    if old.get("command") != planned.get("command"):
        raise JobRefused(f"run name: {run_dir.name!r} is already a {old.get('command')!r} run; choose another name")
    changes = config_diff(old, planned)
    if changes:
        raise JobRefused(f"run name: {run_dir.name!r} already holds a run with other settings "
                         f"({'; '.join(changes)}). Choose a new run name, or the same settings to resume it")
    if _run_ended_cleanly(run_dir):
        raise JobRefused(f"run name: {run_dir.name!r} already finished with these settings (see Results); "
                         "choose a new run name to train again")
    ckpt = _last_checkpoint(run_dir)
    return f"resuming {run_dir.name} from {ckpt.name}" if ckpt is not None else f"restarting {run_dir.name}"


# -- memory -------------------------------------------------------------------------------------------------

# Shapes of the named students (what their config.json says) so that no model is loaded to estimate.
_NAMED_SHAPES = {
    "smollm2-135m": {"params": 134_515_008, "layers": 30, "hidden": 576, "vocab": 49_152},
    "minilm-bert2bert": {"params": 51_000_000, "layers": 12, "hidden": 384, "vocab": 30_522},
}
# Per token and layer, what a transformer layer keeps for the backward pass (fp32, attention through SDPA):
# about 20 values of the hidden width. Rows of 384 tokens are CSQA's longer stage inputs with their targets.
_ACT_BYTES_PER_HIDDEN = 80
TRAIN_ROW_TOKENS, DPO_ROW_TOKENS, TARGET_TOKENS, EVAL_BATCH = 384, 256, 64, 32
_OVERHEAD = int(1.5 * 2**30)  # python, torch, transformers, tokenizer, data


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                out[key] = int(parts[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def memory_available() -> int | None:
    return _meminfo().get("MemAvailable")


def _folder_shape(folder: Path) -> dict[str, int] | None:
    """Layers, hidden width, vocabulary and parameter count of a saved student, from its files alone."""
    meta = folder / "tinythinker_student.json"
    if (folder / "adapter_config.json").is_file() and meta.is_file():
        try:
            base = json.loads(meta.read_text()).get("base")
        except (OSError, json.JSONDecodeError):
            base = None
        shape = student_shape(base) if base else None
        if shape is not None:
            return {**shape, "lora": 1}
        return None
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    parts = [cfg["encoder"], cfg["decoder"]] if isinstance(cfg.get("encoder"), dict) else [cfg]
    layers = sum(int(p.get("num_hidden_layers") or p.get("num_layers") or p.get("n_layer") or 0) for p in parts)
    if isinstance(cfg.get("num_decoder_layers"), int):
        layers += cfg["num_decoder_layers"]
    hidden = int(parts[0].get("hidden_size") or parts[0].get("d_model") or parts[0].get("n_embd") or 0)
    vocab = int(parts[-1].get("vocab_size") or 0)
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors")) or \
        sum(p.stat().st_size for p in folder.glob("pytorch_model*.bin"))
    if not (layers and hidden):
        return None
    return {"params": weights // 4 if weights else layers * 12 * hidden * hidden + vocab * hidden,
            "layers": layers, "hidden": hidden, "vocab": vocab}


def student_shape(student: str) -> dict[str, int] | None:
    """The shape of a student given as `load_student` takes it (None for a hub id: unknown until loaded)."""
    if student in _NAMED_SHAPES:
        return dict(_NAMED_SHAPES[student])
    from tinythinker.shipped import shipped_dir

    folder = Path(student)
    if not folder.is_absolute() and (shipped_dir() / student).is_dir():
        folder = shipped_dir() / student
    if folder.is_dir():
        if (folder / "best").is_dir() and not (folder / "config.json").is_file():
            folder = folder / "best"
        elif (folder / "config.json").is_file() and "command" in (folder / "config.json").read_text()[:4000] \
                and (folder / "best").is_dir():
            folder = folder / "best"
        return _folder_shape(folder)
    return None


@dataclass
class MemoryEstimate:
    need: int  # bytes
    basis: str  # in words: what the estimate assumed
    available: int | None = None
    total: int | None = None
    measured: bool = False  # from an earlier job's measured peak rather than the formula

    @property
    def fits(self) -> bool:
        return self.available is None or self.need <= self.available


def _flag(argv: list[str], name: str, default=None):
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else default


def _forward_batch(argv: list[str], default_batch: int) -> tuple[int, int, int]:
    """(examples per optimizer step, forward passes per step, examples per forward) of a train or reflect
    command line on CPU: --batch-size split by --micro-batches, or by the CPU default (`pairs.micro_batch_count`)."""
    from tinythinker.pairs import micro_batch_count

    step = int(_flag(argv, "--batch-size", str(default_batch)))
    pieces = _flag(argv, "--micro-batches")
    pieces = micro_batch_count(step, None if pieces is None else int(pieces), on_gpu=False)
    return step, pieces, step // pieces


def _estimate_formula(command: str, shape: dict[str, int], batch: int, lora: bool, rows_per_item: int = 1,
                      tokens: int = TRAIN_ROW_TOKENS) -> int:
    params, layers, hidden, vocab = shape["params"], shape["layers"], shape["hidden"], shape.get("vocab", 0)
    if command == "generate":
        # weights, and the key/value cache plus activations of one batch of Analyze rows (8 questions x options)
        return int(_OVERHEAD + params * 4 + 8 * 5 * tokens * layers * hidden * 4 * 4)
    state = params * (4 + (1 if lora else 12))  # weights; full fine-tuning adds gradients and two Adam moments
    rows = batch * rows_per_item
    activations = rows * tokens * layers * hidden * _ACT_BYTES_PER_HIDDEN
    logits = rows * TARGET_TOKENS * vocab * 4 * 3  # the LM head at target positions: logits, softmax, gradient
    evaluation = EVAL_BATCH * tokens * layers * hidden * 2 * 4 * 2  # generation's key/value cache at evaluation
    return int(_OVERHEAD + state + activations + logits + evaluation)


def _job_key(argv: list[str]) -> tuple:
    cmd = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("tinythinker", "tinythinker.jobs")
                and i and argv[i - 1] == "-m"), "")
    who = _flag(argv, "--student") or _flag(argv, "--from") or tuple(a for i, a in enumerate(argv)
                                                                     if i and argv[i - 1] == "--model")
    # Everything that moves a job's peak memory or step time: the batch as one forward holds it (micro-batches,
    # gradient accumulation), gradient checkpointing, and how long the rows may be.
    return (cmd, who, _flag(argv, "--batch-size"), _flag(argv, "--lora-r", "0"), _flag(argv, "--samples"),
            _flag(argv, "--micro-batches"), _flag(argv, "--grad-accum", "1"), "--gradient-checkpointing" in argv,
            _flag(argv, "--max-source-length"))


def estimate_memory(argv: list[str], ws: Workspace | None = None) -> MemoryEstimate | None:
    """The peak memory a job's command will need, before it starts: an earlier job of the same command, student
    and batch size measured it, or else a formula from the student's shape (weights and optimizer state,
    activations of a batch of rows, the LM head, evaluation's cache). None when the student is unknown (a hub
    id), where no estimate is made."""
    key = _job_key(argv)
    command = key[0]
    info = _meminfo()
    if ws is not None:
        peaks = [j for j in list_jobs(ws) if j.peak_rss and _job_key(j.argv) == key and j.finished is not None]
        ok = [j.peak_rss for j in peaks if j.returncode == 0]
        if ok:
            return MemoryEstimate(int(max(ok) * 1.05), f"measured: an earlier job with these settings peaked at "
                                  f"{gigabytes(max(ok))}", info.get("MemAvailable"), info.get("MemTotal"), True)
    lora = key[3] not in (None, "0")
    if command == "train":
        shape = student_shape(_flag(argv, "--student", DEFAULT_STUDENT))
        step, pieces, batch = _forward_batch(argv, default_batch=16)  # Phase1Config's defaults
        rows, tokens = 1, TRAIN_ROW_TOKENS
        what = f"batch {step}" + (f" in {pieces} forward passes of {batch}" if pieces > 1 else "")
    elif command == "reflect":
        source = Path(_flag(argv, "--from", ""))
        student = None
        try:
            student = json.loads((source / "config.json").read_text()).get("student")
        except (OSError, json.JSONDecodeError):
            pass
        shape = (student_shape(str(source / "best")) or (student_shape(student) if student else None)
                 or student_shape(str(source)))  # a shipped phase-1 student by name
        step, pieces, batch = _forward_batch(argv, default_batch=32)  # ReflectConfig's defaults
        rows, tokens = 2, DPO_ROW_TOKENS
        what = (f"batch {step} pairs" + (f" in {pieces} micro-batches of {batch}" if pieces > 1 else "")
                + " (chosen and rejected rows)")
    elif command == "generate":
        shapes = [student_shape(m) for m in (a for i, a in enumerate(argv) if i and argv[i - 1] == "--model")]
        if not shapes or any(s is None for s in shapes):
            return None
        shape = max(shapes, key=lambda s: s["params"])
        batch, rows, tokens, what = 8, 1, TRAIN_ROW_TOKENS, "batches of 8 questions"
    else:
        return None
    if shape is None:
        return None
    if shape.get("lora"):
        lora = True
    need = _estimate_formula(command, shape, batch, lora, rows, tokens)
    millions = shape["params"] / 1e6
    size = f"{millions:.0f}M" if millions >= 10 else f"{millions:.2g}M"
    basis = (f"estimate: {size} parameters, {what}, rows of {tokens} tokens, "
             + ("inference only" if command == "generate" else ("LoRA" if lora else "full fine-tuning")))
    if ws is not None:  # an earlier job of the same kind was killed at some peak: it needed at least that
        killed = [j.peak_rss for j in list_jobs(ws) if j.peak_rss and _job_key(j.argv) == key
                  and (j.returncode or 0) < 0 and not j.cancelled]
        if killed and max(killed) * 1.1 > need:
            need = int(max(killed) * 1.1)
            basis += f"; an earlier job with these settings was killed at {gigabytes(max(killed))}"
    return MemoryEstimate(need, basis, info.get("MemAvailable"), info.get("MemTotal"))


def measured_step_seconds(ws: Workspace, argv: list[str]) -> float | None:
    """Seconds per training step that the newest earlier job of the same command, student and batch size
    measured (its training bar), or None."""
    key = _job_key(runner_argv(argv))
    for job in list_jobs(ws):
        if _job_key(job.argv) == key:
            pace = eta(job)
            if pace and pace["s_per_step"]:
                return float(pace["s_per_step"])
    return None


def check_memory(argv: list[str], ws: Workspace | None = None) -> MemoryEstimate | None:
    """Refuse (JobRefused) a job whose estimated peak memory is over what the machine has available now."""
    est = estimate_memory(argv, ws)
    if est is None or est.fits:
        return est
    hint = ("a smaller batch size" if "--batch-size" in argv or est.basis.find("batch") >= 0 else "fewer models")
    raise JobRefused(
        f"not started: this job would need about {gigabytes(est.need)} of memory ({est.basis}), and the machine "
        f"has {gigabytes(est.available)} available (of {gigabytes(est.total)}). Try {hint}, LoRA, or wait for "
        "other jobs to end")


def quick_run_settings(name: str | None = None, student: str = DEFAULT_STUDENT) -> TrainSettings:
    """A first run that finishes in minutes on a CPU: a CSQA slice, a short schedule, a small validation.
    Enough to replace the untrained model's noise with a trained checkpoint, not to reproduce the paper.
    The recipe is bench/phase1.py's RECIPE2 (the option's words before the letter in the answer target, the
    answer chosen by scoring the options at evaluation) with warm-up, under which both offline students learned
    (bench/RESULTS.md): a pretrained LM (SmolLM2) at lr 5e-5, the bert2bert at 3e-4 with its new cross-attention
    at 10x. 70 steps are one cycle of the interval schedule on CSQA
    (10 Recall + 10 x 5 options Analyze + 10 Summarize), which ends with one evaluation that writes best/."""
    name = check_name(name or time.strftime("quick-%Y%m%d-%H%M%S"), "run name")
    bert2bert = student == "minilm-bert2bert"
    return TrainSettings(run=name, data="csqa", student=student, stage_type="recall_analyze_summarize",
                         interval=10, epochs=1.0, limit=200, eval_limit=50, max_steps=70, batch_size=8,
                         lr=3e-4 if bert2bert else 5e-5, seed=0, warmup_steps=10, answer_format="text_letter",
                         restrict_answer="score",
                         # only a bert2bert has new cross-attention (phase 1 refuses the scale for other students)
                         cross_attention_lr_scale=10.0 if bert2bert else 1.0)


# -- the child side: `python -m tinythinker.jobs <command> ...` ---------------------------------------------

def _install_graceful_stop(state: dict) -> None:
    """Every Trainer built in this process gets a last callback: once SIGTERM has set `state["stop"]`, the
    current step ends with a checkpoint (no evaluation) and the process exits after the run's own callbacks have
    written it (phase 1 makes it a loadable student folder)."""
    import transformers
    from transformers import TrainerCallback

    class StopOnCancel(TrainerCallback):
        def on_train_begin(self, args, st, control, **kwargs):
            state["training"] = True

        def on_train_end(self, args, st, control, **kwargs):
            state["training"] = False

        def on_step_end(self, args, st, control, **kwargs):
            if state["stop"]:
                control.should_evaluate = False
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_save(self, args, st, control, **kwargs):
            if state["stop"]:
                print(f"cancelled: checkpoint-{st.global_step} saved; start the same run again to resume",
                      flush=True)
                raise SystemExit(CANCELLED_EXIT)
            return control

    original = transformers.Trainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(StopOnCancel())  # after the run's own callbacks

    transformers.Trainer.__init__ = init


def _generate(argv: list[str]) -> int:
    """The traces job: each --model (with its --name, --stage-type, --restrict-answer) on the split's first
    --limit questions, written to --out-dir/<name>.jsonl and imported into the store at --db."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m tinythinker.jobs generate")
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--name", action="append", required=True)
    p.add_argument("--stage-type", action="append", required=True)
    p.add_argument("--restrict-answer", action="append", required=True)
    p.add_argument("--data", default="csqa")
    p.add_argument("--split", default="validation")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    if not len(args.model) == len(args.name) == len(args.stage_type) == len(args.restrict_answer):
        p.error("each --model needs its --name, --stage-type and --restrict-answer")

    from tinythinker.data import load_questions
    from tinythinker.pipeline import Sampling, run_pipeline, write_traces
    from tinythinker.store import Store
    from tinythinker.students import load_student

    questions = load_questions(args.data, args.split, data_dir=args.data_dir, limit=args.limit)
    if not questions:
        raise ValueError(f"{args.data} {args.split} has no questions")
    sampling = Sampling.sampled(temperature=args.temperature, seed=args.seed) if args.samples > 1 \
        else Sampling(seed=args.seed)
    total = len(questions) * args.samples * len(args.model)
    done_before = 0
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"generate step 0/{total}", flush=True)
    for model, name, stage_type, mode in zip(args.model, args.name, args.stage_type, args.restrict_answer,
                                             strict=True):
        print(f"loading {name}", flush=True)
        student = load_student(model)

        def on_progress(done, _total, _base=done_before):
            print(f"generate step {_base + done}/{total}", flush=True)

        traces = run_pipeline(student, questions, stage_type=stage_type, sampling=sampling, batch_size=8,
                              num_samples=args.samples, restrict_answer=mode, on_progress=on_progress)
        done_before += len(traces)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"
        path = write_traces(out_dir / f"{slug}-{args.data}-{args.split}-{len(questions)}x{args.samples}.jsonl",
                            traces)
        with Store(args.db) as store:
            ids = store.import_file(path, model=name, iteration=0, on_duplicate="skip")
            again = getattr(ids, "duplicates", 0)
            print(f"imported {len(ids)} traces of {name} into the store"
                  + (f" ({again} already there)" if again else ""), flush=True)
        del student
    print("generate done", flush=True)
    return 0


def _main(argv: list[str]) -> int:
    """Entry of jobs the app starts. SIGTERM (Cancel): a phase-1 run inside its training loop saves a checkpoint
    at the end of the current step and exits; anything else (loading, phase 2, traces) exits at once. A second
    SIGTERM exits at once too."""
    command = argv[0] if argv else ""
    state = {"stop": False, "training": False}

    def on_term(signum, frame):
        if command == "train" and state["training"] and not state["stop"]:
            state["stop"] = True
            print("cancel requested: saving a checkpoint at the end of the current step", flush=True)
            return
        raise SystemExit(CANCELLED_EXIT)

    signal.signal(signal.SIGTERM, on_term)
    if command == "generate":
        try:
            return _generate(argv[1:])
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if command == "train":
        _install_graceful_stop(state)
    from tinythinker.cli import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
