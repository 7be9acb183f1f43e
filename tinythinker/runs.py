"""A run is a folder: the shared record the CLI writes and the app reads.

    config.json     the resolved config the run was started with (a rerun must match it)
    metrics.jsonl   one JSON object a line, each with a `kind`: "train" (loss at a logging step, with its
                    stage), "eval" (validation accuracy), "end" (the run finished)
    train.log       human-readable log
    checkpoints/    Trainer checkpoints (checkpoint-<step>/), what a rerun resumes from
    best/           the best checkpoint so far, a loadable student folder
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG, METRICS, LOG, CHECKPOINTS, BEST = "config.json", "metrics.jsonl", "train.log", "checkpoints", "best"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class RunError(ValueError):
    """A run folder that cannot be used as asked (another config, unreadable files)."""


def _atomic_write(path: Path, text: str) -> None:
    # A kill between open and close must not leave a half-written config behind.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_config(run: str | Path) -> dict[str, Any]:
    path = Path(run) / CONFIG
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: no config.json, not a run folder") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<missing>')!r} -> {new.get(k, '<missing>')!r}" for k in keys
            if old.get(k) != new.get(k)]


def prepare_run(run: str | Path, config: dict[str, Any]) -> bool:
    """Create the run folder with its config, or check that an existing one holds the same config.

    Returns True when the folder already held this config (a rerun that should resume). A different config
    is an error: resuming it would silently mix two experiments in one record.
    """
    run = Path(run)
    config = json.loads(json.dumps(config))  # what a reader will see: tuples become lists
    if (run / CONFIG).exists():
        old = read_config(run)
        changes = _diff(old, config)
        if changes:
            raise RunError(
                f"run folder {run} holds another config ({'; '.join(changes)}); "
                "use a new --run folder or the same options as before"
            )
        return True
    if run.exists() and any(run.iterdir()):
        raise RunError(f"run folder {run} exists, is not empty and has no {CONFIG}; choose a new --run folder")
    run.mkdir(parents=True, exist_ok=True)
    _atomic_write(run / CONFIG, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return False


def append_metrics(run: str | Path, *records: dict[str, Any]) -> None:
    with open(Path(run) / METRICS, "a") as f:
        for r in records:
            if "kind" not in r:
                raise ValueError(f"metrics record without 'kind': {r!r}")
            f.write(json.dumps(r, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """All records of metrics.jsonl (of one kind if given). A torn last line (the writer was killed) is skipped."""
    path = Path(run) / METRICS
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                break
            raise RunError(f"{path}:{i}: not valid JSON") from None
        if kind is None or rec.get("kind") == kind:
            out.append(rec)
    return out


def truncate_metrics(run: str | Path, after_step: int) -> int:
    """Drop records logged after `after_step` (and the "end" record): a resumed run replays those steps and
    would log them again. Returns how many records were dropped."""
    path = Path(run) / METRICS
    if not path.exists():
        return 0
    records = read_metrics(run)
    keep = [r for r in records if r.get("kind") != "end" and r.get("step", 0) <= after_step]
    _atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
    return len(records) - len(keep)


def checkpoints(run: str | Path) -> list[Path]:
    """Checkpoint folders, oldest step first."""
    folder = Path(run) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def last_checkpoint(run: str | Path) -> Path | None:
    """The newest complete checkpoint (one the Trainer finished writing: it has trainer_state.json)."""
    for p in reversed(checkpoints(run)):
        if (p / "trainer_state.json").exists():
            return p
    return None


@dataclass
class RunSummary:
    path: str
    name: str
    command: str
    student: str
    data: str
    stage_type: str
    step: int
    best_accuracy: float | None
    last_accuracy: float | None
    has_best: bool
    finished: bool
    updated: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize_run(run: str | Path) -> RunSummary:
    run = Path(run)
    config = read_config(run)
    records = read_metrics(run)
    evals = [r for r in records if r.get("kind") == "eval" and r.get("accuracy") is not None]
    steps = [r.get("step", 0) for r in records if r.get("kind") in ("train", "eval")]
    return RunSummary(
        path=str(run),
        name=run.name,
        command=str(config.get("command", "")),
        student=str(config.get("student", "")),
        data=str(config.get("data", "")),
        stage_type=str(config.get("stage_type", "")),
        step=max(steps, default=0),
        best_accuracy=max((r["accuracy"] for r in evals), default=None),
        last_accuracy=evals[-1]["accuracy"] if evals else None,
        has_best=(run / BEST).is_dir(),
        finished=any(r.get("kind") == "end" for r in records),
        updated=max((p.stat().st_mtime for p in (run / CONFIG, run / METRICS) if p.exists()), default=0.0),
    )


def list_runs(root: str | Path = "runs") -> list[RunSummary]:
    """Every run folder under `root` (any depth), newest first. Unreadable folders are skipped, not fatal:
    the app lists what it can while a run is being written."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for cfg in root.rglob(CONFIG):
        if CHECKPOINTS in cfg.parent.parts or cfg.parent.name == BEST:
            continue
        try:
            if "command" not in read_config(cfg.parent):
                continue  # a model's config.json (a saved student), not a run
            out.append(summarize_run(cfg.parent))
        except RunError:
            continue
    return sorted(out, key=lambda r: r.updated, reverse=True)


def split_seed(config: dict[str, Any]) -> int:
    """The seed a run's train/validation split was drawn with: `split_seed`, else (runs from before it, and runs
    whose two seeds agree, which leave it out) `seed`."""
    return int(config.get("split_seed", config.get("seed", 0)))


def run_of(checkpoint: str | Path) -> Path | None:
    """The run folder a student folder belongs to (the folder itself, its best/, checkpoints/checkpoint-N or a
    phase-2 iter_<k>/best); None for anything that is no run's (a named or shipped student, a hub id)."""
    path = Path(checkpoint)
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / CONFIG).is_file():
            try:
                if read_config(candidate).get("command") in ("train", "reflect"):
                    return candidate
            except RunError:
                return None
    return None


def trained_questions(student: str | Path, _depth: int = 0) -> set[str]:
    """Ids of every question whose answer trained `student`: its run's training questions and those of each run
    it continued (`--student` of a train run, `--from` of a reflect run), as far as their folders are here.
    Students that are no run (named, shipped, hub) contribute nothing."""
    from tinythinker.data import DataError, load_questions

    run = run_of(student)
    if run is None or _depth > 20:
        return set()
    config = read_config(run)
    parent = config.get("student") if config.get("command") == "train" else config.get("from_run")
    if config.get("command") == "reflect":
        phase1 = run_of(parent) if parent else None
        config = {**(read_config(phase1) if phase1 else {}), "limit": config.get("limit")}
    try:
        questions = load_questions(config.get("data", "csqa"), "train", data_dir=config.get("data_dir"),
                                   seed=split_seed(config), limit=config.get("limit"), path=config.get("path"))
    except DataError:
        questions = []  # its data is not here (a moved file, no benchmark folder): nothing to compare against
    return {q.id for q in questions} | (trained_questions(parent, _depth + 1) if parent else set())
