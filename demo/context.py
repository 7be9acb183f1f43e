"""What every tab shares: the workspace folders, the model cache, the question cache, checkpoint choices."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from tinythinker import DEFAULT_STUDENT
from tinythinker.data import load_examples, load_questions
from tinythinker.jobs import NAMED_STUDENTS
from tinythinker.modelcache import StudentCache
from tinythinker.runs import RunError, read_config
from tinythinker.types import Question, Rationale
from tinythinker.workspace import RUNS, Workspace, student_folders

UNTRAINED_SUFFIX = " (untrained)"


@dataclass
class AppContext:
    ws: Workspace
    default_student: str = DEFAULT_STUDENT
    students: StudentCache = field(default_factory=StudentCache)
    _questions: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def questions(self, benchmark: str, split: str) -> list[Question]:
        """A benchmark split, loaded once per app process (seeded splits make it the same every time)."""
        key = (benchmark, split)
        with self._lock:
            if key not in self._questions:
                self._questions[key] = load_questions(benchmark, split, data_dir=self.ws.data_dir)
            return self._questions[key]

    def examples(self, benchmark: str, split: str) -> list[tuple[Question, list[Rationale]]]:
        key = ("examples", benchmark, split)
        with self._lock:
            if key not in self._questions:
                self._questions[key] = load_examples(benchmark, split, data_dir=self.ws.data_dir)
            return self._questions[key]

    def user_examples(self, path: Path, split: str) -> list[tuple[Question, list[Rationale]]]:
        """A user's own JSONL (already resolved inside the workspace); reloaded when the file changes."""
        key = ("jsonl", str(path), split, path.stat().st_mtime)
        with self._lock:
            if key not in self._questions:
                self._questions[key] = load_examples("jsonl", split, path=path)
            return self._questions[key]

    def checkpoint_choices(self, include_untrained: bool = True) -> list[tuple[str, str]]:
        """(label, value) pairs for a checkpoint dropdown: trained folders first, newest first; the untrained
        default last and labelled as such, so nobody mistakes its output for a result."""
        choices = [(self.ws.relative(p), self.ws.relative(p)) for p in student_folders(self.ws.runs_dir)]
        if include_untrained:
            choices.append((self.default_student + UNTRAINED_SUFFIX, self.default_student))
        return choices

    def has_trained(self) -> bool:
        return bool(student_folders(self.ws.runs_dir))

    def checkpoint_path(self, value: str, field: str = "checkpoint") -> str:
        """A dropdown/typed checkpoint as what load_student takes: a named default, or a folder inside runs/."""
        if value in NAMED_STUDENTS:
            return value
        return str(self.ws.resolve(value, RUNS, field=field))

    def is_untrained(self, value: str) -> bool:
        return value in NAMED_STUDENTS

    def student(self, value: str):
        return self.students.get(self.checkpoint_path(value))

    def default_pair(self) -> tuple[str | None, str | None]:
        """Compare's defaults: the newest phase-1 model and the newest self-reflected one."""
        phase1, phase2 = [], []
        for folder in student_folders(self.ws.runs_dir):
            rel = folder.relative_to(self.ws.runs_dir)
            try:
                command = read_config(self.ws.runs_dir / rel.parts[0]).get("command", "")
            except RunError:
                command = ""
            (phase2 if command == "reflect" else phase1).append(self.ws.relative(folder))
        a = phase1[0] if phase1 else None
        b = phase2[0] if phase2 else (phase1[1] if len(phase1) > 1 else None)
        return a, b
