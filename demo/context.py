"""What every tab shares: the workspace folders, the model cache, the question cache, checkpoint choices, the
shipped students and how each model is meant to answer."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from tinythinker import DEFAULT_STUDENT
from tinythinker.compare import parent_checkpoint
from tinythinker.data import DataError, load_examples, load_questions, resolve_data_dir
from tinythinker.jobs import NAMED_STUDENTS, resolve_student
from tinythinker.modelcache import StudentCache
from tinythinker.runs import RunError, read_config
from tinythinker.shipped import (
    ShippedModel,
    answer_settings,
    best_phase1,
    cached_questions,
    cached_questions_note,
    cached_range_error,
    import_shipped_traces,
    list_shipped,
    shipped_pair,
)
from tinythinker.types import Question, Rationale
from tinythinker.workspace import Workspace, student_folders

UNTRAINED_SUFFIX = " (untrained)"


@dataclass
class AppContext:
    ws: Workspace
    default_student: str = DEFAULT_STUDENT
    students: StudentCache = field(default_factory=StudentCache)
    shipped_root: Path | None = None  # None: env TINYTHINKER_SHIPPED_DIR, else demo/models/
    _questions: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _data_problem: list = field(default_factory=list)  # [] until checked, then [None | message]
    imported: dict = field(default_factory=dict)  # what prepare() filed in the store, per shipped model
    _cached_notes: dict = field(default_factory=dict)  # (benchmark, split) -> note, for questions from the traces

    # -- data ------------------------------------------------------------------------------------------------
    def questions(self, benchmark: str, split: str) -> list[Question]:
        """A benchmark split, loaded once per app process (seeded splits make it the same every time). When the
        benchmark data cannot be read, the questions cached with the shipped students for that split (the first
        ones of it, in order; `questions_note` says so); without those, the data error."""
        key = (benchmark, split)
        with self._lock:
            if key not in self._questions:
                try:
                    self._questions[key] = load_questions(benchmark, split, data_dir=self.ws.data_dir)
                except DataError:
                    cached = cached_questions(benchmark, split, self.shipped_root)
                    if not cached:
                        raise
                    self._questions[key] = cached
                    self._cached_notes[key] = cached_questions_note(len(cached), benchmark, split,
                                                                    self._data_folder())
            return self._questions[key]

    def questions_note(self, benchmark: str, split: str) -> str:
        """'' for a split read from the benchmark data; for one from the shipped students' cached traces, the
        line saying so (after `questions` has loaded it)."""
        return self._cached_notes.get((benchmark, split), "")

    def question(self, benchmark: str, split: str, index: int) -> Question:
        """Question # `index` of a split; a ValueError for one outside it (saying how to get the rest when only
        the cached questions are here)."""
        questions = self.questions(benchmark, split)
        if not 0 <= index < len(questions):
            if self.questions_note(benchmark, split):
                raise ValueError(cached_range_error(index, len(questions), benchmark, split))
            raise ValueError(f"question #: {index} is outside 0..{len(questions) - 1} ({benchmark} {split})")
        return questions[index]

    def _data_folder(self) -> Path | None:
        """The local data folder load_questions read (None: none, the hub)."""
        try:
            return resolve_data_dir(self.ws.data_dir)
        except DataError:
            return self.ws.data_dir

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

    def data_problem(self) -> str | None:
        """None when the quick run's data (CSQA's training split with its rationales) can be read, else why not.
        Checked once per app process."""
        if not self._data_problem:
            try:
                self.examples("csqa", "train")
                problem = None
            except Exception as e:  # noqa: BLE001 - any reason is shown to the user, none is fatal
                problem = str(e).strip("'\"") or type(e).__name__
            self._data_problem.append(problem)
        return self._data_problem[0]

    # -- models ----------------------------------------------------------------------------------------------
    def shipped(self) -> list[ShippedModel]:
        return list_shipped(self.shipped_root)

    def shipped_model(self, value: str) -> ShippedModel | None:
        return next((m for m in self.shipped() if m.name == value), None)

    def prepare(self) -> dict:
        """First start: the shipped models' cached traces go into the store (once; later starts find them)."""
        try:
            self.imported = import_shipped_traces(self.ws.db, self.shipped())
        except Exception as e:  # noqa: BLE001 - a broken store must not stop the app from starting
            self.imported = {"error": str(e)}
        return self.imported

    def checkpoint_choices(self, include_untrained: bool = True) -> list[tuple[str, str]]:
        """(label, value) pairs for a checkpoint dropdown: trained folders first, newest first; then the shipped
        students; the untrained default last and labelled as such, so nobody mistakes its output for a result."""
        choices = [(self.ws.relative(p), self.ws.relative(p)) for p in student_folders(self.ws.runs_dir)]
        choices += [(m.label, m.name) for m in self.shipped()]
        if include_untrained:
            choices.append((self.default_student + UNTRAINED_SUFFIX, self.default_student))
        return choices

    def default_checkpoint(self) -> str:
        """What Step through starts on: the newest trained model, else the best shipped phase-1 student (by its
        validation accuracy), else any shipped one, else the untrained default."""
        trained = student_folders(self.ws.runs_dir)
        if trained:
            return self.ws.relative(trained[0])
        shipped = self.shipped()
        first = best_phase1(shipped) or (shipped[0] if shipped else None)
        return first.name if first is not None else self.default_student

    def has_trained(self) -> bool:
        return bool(student_folders(self.ws.runs_dir))

    def checkpoint_path(self, value: str, field: str = "checkpoint") -> str:
        """A dropdown/typed checkpoint as what load_student takes: a named default, a shipped student's folder,
        a folder inside runs/, or else a hub id (refused at once while the hub is disabled)."""
        value = (value or "").strip()
        shipped = self.shipped_model(value)
        if shipped is not None:
            return str(shipped.folder)
        return resolve_student(value, self.ws, field=field)

    def is_untrained(self, value: str) -> bool:
        return value in NAMED_STUDENTS

    def label(self, value: str) -> str:
        """A model's name as messages show it, marked when it is untrained or shipped."""
        if self.is_untrained(value):
            return f"{value}{UNTRAINED_SUFFIX}"
        shipped = self.shipped_model(value)
        return shipped.label if shipped is not None else value

    def student(self, value: str):
        return self.students.get(self.checkpoint_path(value))

    def settings(self, value: str) -> dict[str, str]:
        """The stage type, answer format and answer mode `value` was trained with (defaults for a plain one)."""
        shipped = self.shipped()
        if any(m.name == value for m in shipped):
            return answer_settings(value, self.ws.runs_dir, shipped)
        try:
            path = self.checkpoint_path(value)
        except ValueError:
            return answer_settings(value, self.ws.runs_dir, shipped)
        return answer_settings(path, self.ws.runs_dir, shipped)

    def default_pair(self) -> tuple[str | None, str | None]:
        """Compare's defaults: the newest self-reflected model of runs/ (B) and the phase-1 model it was reflected
        from (A; else the newest phase-1 model); without a trained self-reflected run, the shipped phase-1 student
        and its reflected successor."""
        phase1, phase2 = [], []
        for folder in student_folders(self.ws.runs_dir):
            rel = folder.relative_to(self.ws.runs_dir)
            try:
                command = read_config(self.ws.runs_dir / rel.parts[0]).get("command", "")
            except RunError:
                command = ""
            (phase2 if command == "reflect" else phase1).append(self.ws.relative(folder))
        if phase2:
            # The newest reflected run's selected model (its best/ is a copy of an iter_<k>/best, with the same
            # mtime, so either may sort first) against the phase-1 model it was reflected from: before and after.
            best = str(Path(Path(phase2[0]).parts[0]) / "best")
            after = best if best in phase2 else phase2[0]
            parent = parent_checkpoint(self.ws.runs_dir / after)
            listed = parent is not None and parent.resolve().is_relative_to(self.ws.runs_dir)
            before = self.ws.relative(parent) if listed else (phase1[0] if phase1 else None)
            return before, after
        s1, s2 = shipped_pair(self.shipped())
        if s1 is not None and s2 is not None:
            return s1.name, s2.name
        a = phase1[0] if phase1 else (s1.name if s1 else None)
        b = phase1[1] if len(phase1) > 1 else (s2.name if s2 else (s1.name if s1 and a != s1.name else None))
        return a, b
