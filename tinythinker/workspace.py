"""The folders a web UI may touch, and safe resolution of paths typed into it.

A path field in a browser is untrusted input: `../../etc/passwd` or an absolute path must not let a visitor read
or write files outside the workspace. Every path the app takes from a form goes through `Workspace.resolve`,
which resolves symlinks and `..` first and only then checks the result lies inside an allowed folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# Names of runs and exports typed into the UI become folder names: keep them to a portable, shell-inert alphabet.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")

DATA, RUNS, ANNOTATIONS = "data", "runs", "annotations"


class WorkspaceError(ValueError):
    """A path or name from the UI that points outside the workspace or is malformed."""


@dataclass
class Workspace:
    """`runs_dir` holds runs and checkpoints, `db` the annotation store (its folder takes exports),
    `data_dir` the benchmark files (read only; None when the data comes from the hub)."""

    runs_dir: Path
    db: Path
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        self.runs_dir = Path(self.runs_dir).resolve()
        self.db = Path(self.db).resolve()
        self.data_dir = Path(self.data_dir).resolve() if self.data_dir else None

    @property
    def annotations_dir(self) -> Path:
        return self.db.parent

    def roots(self, kind: str) -> list[Path]:
        if kind == DATA:
            # A user's own JSONL may sit beside the benchmarks or in the runs folder (e.g. exported traces).
            return [p for p in (self.data_dir, self.runs_dir) if p is not None]
        if kind == RUNS:
            return [self.runs_dir]
        if kind == ANNOTATIONS:
            return [self.annotations_dir]
        raise ValueError(f"unknown workspace folder kind {kind!r}")

    def resolve(self, value: str | os.PathLike, kind: str, field: str = "path", must_exist: bool = True) -> Path:
        """The absolute path for `value` if it lies inside the `kind` folders, else WorkspaceError.

        Relative paths are tried against each allowed folder first, then against the current directory (so both
        `csqa-p1/best` and `runs/csqa-p1/best` work)."""
        text = str(value).strip() if value is not None else ""
        if not text:
            raise WorkspaceError(f"{field}: empty path")
        if "\x00" in text:
            raise WorkspaceError(f"{field}: path contains a NUL byte")
        roots = self.roots(kind)
        raw = Path(text).expanduser()
        candidates = [raw] if raw.is_absolute() else [root / raw for root in roots] + [Path.cwd() / raw]
        inside = [c.resolve() for c in candidates if _inside(c.resolve(), roots)]
        if not inside:
            allowed = ", ".join(str(r) for r in roots)
            raise WorkspaceError(f"{field}: {text!r} is outside the workspace folders ({allowed})")
        for path in inside:
            if path.exists() or not must_exist:
                return path
        raise WorkspaceError(f"{field}: {text!r} does not exist under {', '.join(str(r) for r in roots)}")

    def run_dir(self, name: str, field: str = "run name") -> Path:
        """A run folder for a new run from a bare name (no separators, no `..`)."""
        return self.runs_dir / check_name(name, field)

    def relative(self, path: Path) -> str:
        """How the UI shows a workspace path: relative to the runs folder when inside it."""
        path = Path(path).resolve()
        for root in (self.runs_dir, self.annotations_dir, self.data_dir):
            if root is not None and path.is_relative_to(root):
                return str(path.relative_to(root))
        return str(path)


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def check_name(name: str, field: str = "name") -> str:
    name = (name or "").strip()
    if not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise WorkspaceError(
            f"{field}: {name!r} must be 1-80 characters of letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def student_folders(root: str | Path) -> list[Path]:
    """Loadable student folders under `root` (run `best/` folders, per-iteration models), newest first.
    Trainer's intermediate `checkpoints/` are left out: a run's selected model is its `best/`."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = set()
    # A full model has config.json and weights; a LoRA student (peft) has adapter_config.json and the adapter.
    for name, weights in (("config.json", _WEIGHTS), ("adapter_config.json", _ADAPTER_WEIGHTS)):
        for cfg in root.rglob(name):
            folder = cfg.parent
            if "checkpoints" in folder.relative_to(root).parts:
                continue
            if any((folder / w).is_file() for w in weights):
                found.add(folder)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
