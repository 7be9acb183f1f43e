"""Training jobs as child processes: validated settings -> an argument list -> `python -m tinythinker ...`.

Never a shell string: a web UI that passed training settings through `shell=True` had a command-injection CVE.
Every value is checked (type, range, alphabet) before it becomes one element of argv, and paths are resolved
inside the workspace. A job's state lives on disk beside its run (`<runs>/.jobs/<run>/job.json` and `job.log`,
outside the run folder, which the training command wants to itself) so a page reload, or a new app process, finds
running jobs again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tinythinker import DEFAULT_STUDENT
from tinythinker.stages import ANSWER_FORMATS, ANSWER_MODES, STAGE_TYPES, answer_mode
from tinythinker.workspace import RUNS, Workspace, WorkspaceError, check_name

BENCHMARKS = ("csqa", "obqa", "strategyqa")
NAMED_STUDENTS = ("minilm-bert2bert", "smollm2-135m")
# The same choices as tinythinker.phase2 (a test keeps them equal): importing phase2 here would load the whole
# training stack (transformers.Trainer) at app start-up just for two tuples.
DPO_STAGE_TYPES = ("recall", "analyze", "recall_analyze")
PAIR_MODES = ("auto", "curated", "both")
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


def _student(value: str, ws: Workspace) -> str:
    if value in NAMED_STUDENTS:
        return value
    return str(ws.resolve(value, RUNS, field="student"))


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
    argv += _opt("--data-dir", ws.data_dir)
    return argv


def reflect_args(s: ReflectSettings, ws: Workspace) -> list[str]:
    """argv for a phase-2 run, each element validated."""
    source = ws.resolve(s.from_run, RUNS, field="from run")
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
    return argv  # the data (and its folder) come from the phase-1 run's config


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

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def log_path(self) -> Path:
        return job_dir(self.run_dir) / JOB_LOG

    def to_json(self) -> str:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        return json.dumps(d, indent=1)


def job_dir(run_dir: Path) -> Path:
    return Path(run_dir).parent / JOBS / Path(run_dir).name


# Popen objects of the jobs this process started: needed to reap them (and read their exit code) as they end.
_CHILDREN: dict[int, subprocess.Popen] = {}


def start(argv: list[str], run_dir: Path, kind: str) -> Job:
    """Start `argv` (a list, no shell) in its own session so it outlives a page reload or an app restart."""
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise TypeError("a job's command must be a list of strings")
    run_dir = Path(run_dir)
    existing = load_job(run_dir)
    if existing is not None and is_running(existing):
        raise WorkspaceError(f"run {run_dir.name!r} already has a running job (pid {existing.pid})")
    job_dir(run_dir).mkdir(parents=True, exist_ok=True)
    log = open(job_dir(run_dir) / JOB_LOG, "ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env, cwd=Path.cwd())
    log.close()
    _CHILDREN[proc.pid] = proc
    job = Job(run_dir=run_dir, pid=proc.pid, argv=argv, kind=kind, started=time.time())
    _save(job)
    return job


def _save(job: Job) -> None:
    folder = job_dir(job.run_dir)
    tmp = folder / (JOB_FILE + ".tmp")
    tmp.write_text(job.to_json())
    os.replace(tmp, folder / JOB_FILE)


def load_job(run_dir: Path) -> Job | None:
    path = job_dir(run_dir) / JOB_FILE
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    d["run_dir"] = Path(d["run_dir"])
    return Job(**d)


def is_running(job: Job) -> bool:
    return refresh(job).returncode is None and job.finished is None


def refresh(job: Job) -> Job:
    """Update a job's exit status from the process table and persist it once it has ended."""
    if job.finished is not None:
        return job
    proc = _CHILDREN.get(job.pid)
    if proc is not None:
        code = proc.poll()
        if code is None:
            return job
        _CHILDREN.pop(job.pid, None)
    else:
        if _pid_alive(job.pid, job.argv):
            return job
        code = -1  # started by an earlier app process; its exit code is gone with it
    job.returncode = code
    job.finished = time.time()
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


def cancel(job: Job, grace_s: float = 5.0) -> Job:
    """SIGTERM the job's whole process group (dataloader workers included), SIGKILL after `grace_s`."""
    if not is_running(job):
        return job
    job.cancelled = True
    _save(job)
    try:
        os.killpg(job.pid, signal.SIGTERM)
    except ProcessLookupError:
        return refresh(job)
    deadline = time.time() + grace_s
    while time.time() < deadline:
        if not is_running(job):
            return job
        time.sleep(0.1)
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc = _CHILDREN.get(job.pid)
    if proc is not None:
        proc.wait(timeout=10)
    return refresh(job)


def list_jobs(ws: Workspace) -> list[Job]:
    """Every job ever started in the runs folder, newest first."""
    jobs = []
    if ws.runs_dir.is_dir():
        for path in (ws.runs_dir / JOBS).glob(f"*/{JOB_FILE}"):
            job = load_job(ws.runs_dir / path.parent.name)
            if job is not None:
                jobs.append(refresh(job))
    return sorted(jobs, key=lambda j: j.started, reverse=True)


# The Trainer's bar has no description ("  45%|####  | 54/120 [...]"), unlike model-loading bars
# ("Loading weights: 100%|...| 99/99"); phase 2's printer writes "step 12/40" and "iteration 2 done".
_TRAINER_BAR_RE = re.compile(r"^\s*\d{1,3}%\|[^|]*\|\s*(\d+)/(\d+)")
_REFLECT_STEP_RE = re.compile(r"\bstep (\d+)/(\d+)\b")
_ITERATION_DONE_RE = re.compile(r"\biteration (\d+) done\b")


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
