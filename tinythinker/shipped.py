"""Students shipped with the app, and how any model the app lists answers.

A shipped student is a folder `demo/models/<name>/` (the root is overridable with env TINYTHINKER_SHIPPED_DIR):

    shipped.json              {name, role: "phase1" | "reflected" | "baseline", parent, base, val_acc, stage_type,
                               answer_format, restrict_answer} (optional: iteration, data, split)
    model_card.md             data, recipe, exact command, validation accuracy, date
    adapter_config.json, adapter_model.safetensors, tinythinker_student.json ...   a peft LoRA adapter over `base`
    traces/validation.jsonl   cached greedy traces on the validation split (what Results, Compare and Annotate
                              show without running the model), trace i on validation question i of the project's
                              split (`data`/`split` of shipped.json; csqa validation when not given)

`list_shipped()` reads every `shipped.json` under the root (a missing or empty root is no shipped model; a folder
with an unreadable `shipped.json` is skipped with a warning, never fatal: the app must start). `answer_settings()`
says with which stage type, answer format and answer mode a model is meant to be run: a shipped model's own, a
run's config (a phase-2 run follows its phase-1 run), or the defaults for a plain student. `cached_questions()`
gives the questions those traces hold: what the app shows when no benchmark data can be read (first use).
No torch, no gradio: the app lists these at start-up.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinythinker.stages import ANSWER_FORMATS, DEFAULT_STAGE_TYPE, STAGE_TYPES, answer_mode
from tinythinker.traces import read_traces, trace_questions
from tinythinker.types import Question

log = logging.getLogger(__name__)

ENV_SHIPPED_DIR = "TINYTHINKER_SHIPPED_DIR"
DEFAULT_SHIPPED_DIR = Path(__file__).resolve().parent.parent / "demo" / "models"
SHIPPED_FILE, CARD_FILE, TRACES_FILE = "shipped.json", "model_card.md", Path("traces") / "validation.jsonl"
PHASE1, REFLECTED = "phase1", "reflected"
# The answer-only twin of the phase-1 student (stage type summarize, same data and steps): what the method is
# measured against, shipped so that Compare can show where the stages win and lose. Never what Step through
# starts on, nor a source for phase 2: it is not a TinyThinker student.
BASELINE = "baseline"
ROLES = (PHASE1, REFLECTED, BASELINE)
ROLE_WORDS = {PHASE1: "phase 1", REFLECTED: "self-reflected", BASELINE: "answer-only baseline"}


class ShippedError(ValueError):
    """A shipped.json that cannot be used (missing fields, unknown role or stage type)."""


@dataclass(frozen=True)
class ShippedModel:
    name: str
    folder: Path
    role: str
    parent: str | None = None
    base: str | None = None
    val_acc: float | None = None
    stage_type: str = DEFAULT_STAGE_TYPE
    answer_format: str = "letter"
    restrict_answer: str = "free"  # `stages.ANSWER_MODES`
    iteration: int = 0  # what the store files its traces under (a reflected model: its DPO iteration)
    data: str | None = None  # the benchmark its traces are on (None: not said; their questions' source tells)
    split: str = "validation"  # the split its traces are on

    @property
    def traces_path(self) -> Path:
        return self.folder / TRACES_FILE

    @property
    def has_traces(self) -> bool:
        return self.traces_path.is_file()

    @property
    def card_path(self) -> Path:
        return self.folder / CARD_FILE

    def card(self) -> str:
        try:
            return self.card_path.read_text(encoding="utf-8")
        except OSError:
            return ""

    def answer_settings(self) -> dict[str, str]:
        return {"stage_type": self.stage_type, "answer_format": self.answer_format,
                "restrict_answer": self.restrict_answer}

    @property
    def label(self) -> str:
        """How a dropdown shows it: name, role and validation accuracy."""
        acc = "" if self.val_acc is None else f", val {self.val_acc:.1%}"
        return f"{self.name} (shipped: {ROLE_WORDS.get(self.role, self.role)}{acc})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "folder": str(self.folder), "role": self.role, "parent": self.parent,
                "base": self.base, "val_acc": self.val_acc, "stage_type": self.stage_type,
                "answer_format": self.answer_format, "restrict_answer": self.restrict_answer,
                "iteration": self.iteration, "data": self.data, "split": self.split,
                "traces": str(self.traces_path) if self.has_traces else None}


def shipped_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder of shipped models: `root`, else env TINYTHINKER_SHIPPED_DIR, else demo/models/."""
    chosen = root if root is not None else os.environ.get(ENV_SHIPPED_DIR) or DEFAULT_SHIPPED_DIR
    return Path(chosen).expanduser()


def read_shipped(folder: str | os.PathLike) -> ShippedModel:
    """One shipped folder's `shipped.json`, checked; ShippedError says what is wrong with it."""
    folder = Path(folder)
    path = folder / SHIPPED_FILE
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ShippedError(f"{path}: cannot be read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ShippedError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(d, dict):
        raise ShippedError(f"{path}: expected a JSON object")
    name = d.get("name") or folder.name
    if not isinstance(name, str):
        raise ShippedError(f"{path}: 'name' must be a string")
    role = d.get("role")
    if role not in ROLES:
        raise ShippedError(f"{path}: 'role' is {role!r}, expected one of {', '.join(ROLES)}")
    stage_type = d.get("stage_type") or DEFAULT_STAGE_TYPE
    if stage_type not in STAGE_TYPES:
        raise ShippedError(f"{path}: unknown stage_type {stage_type!r}")
    answer_format = d.get("answer_format") or "letter"
    if answer_format not in ANSWER_FORMATS:
        raise ShippedError(f"{path}: unknown answer_format {answer_format!r}")
    try:
        mode = answer_mode(d.get("restrict_answer", False))
    except ValueError as e:
        raise ShippedError(f"{path}: restrict_answer: {e}") from None
    val_acc = d.get("val_acc")
    if val_acc is not None and not isinstance(val_acc, int | float):
        raise ShippedError(f"{path}: 'val_acc' must be a number")
    iteration = d.get("iteration", 0 if role == PHASE1 else 1)
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ShippedError(f"{path}: 'iteration' must be a whole number >= 0")
    data, split = d.get("data"), d.get("split") or "validation"
    if data is not None and not isinstance(data, str):
        raise ShippedError(f"{path}: 'data' must be a benchmark name")
    if not isinstance(split, str):
        raise ShippedError(f"{path}: 'split' must be a split name")
    return ShippedModel(name=name, folder=folder.resolve(), role=role, parent=d.get("parent"), base=d.get("base"),
                        val_acc=None if val_acc is None else float(val_acc), stage_type=stage_type,
                        answer_format=answer_format, restrict_answer=mode, iteration=iteration, data=data or None,
                        split=split)


def list_shipped(root: str | os.PathLike | None = None) -> list[ShippedModel]:
    """Every shipped model under the root, phase 1 before reflected, then by name. A missing or empty root gives
    []; an unreadable shipped.json is skipped (logged), and of two folders claiming one name the first wins."""
    base = shipped_dir(root)
    if not base.is_dir():
        return []
    found: dict[str, ShippedModel] = {}
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and (p / SHIPPED_FILE).is_file()):
        try:
            model = read_shipped(folder)
        except ShippedError as e:
            log.warning("skipping shipped model: %s", e)
            continue
        if model.name in found:
            log.warning("skipping %s: the shipped name %r is already taken by %s", folder, model.name,
                        found[model.name].folder)
            continue
        found[model.name] = model
    return sorted(found.values(), key=lambda m: (ROLES.index(m.role), m.name))


def get_shipped(name: str, root: str | os.PathLike | None = None) -> ShippedModel | None:
    return next((m for m in list_shipped(root) if m.name == name), None)


def ranked_phase1(models: list[ShippedModel]) -> list[ShippedModel]:
    """The shipped phase-1 students, highest validation accuracy first (one without a number last; ties keep the
    listing order)."""
    return sorted((m for m in models if m.role == PHASE1), key=lambda m: (m.val_acc is None, -(m.val_acc or 0.0)))


def best_phase1(models: list[ShippedModel]) -> ShippedModel | None:
    """What a first look at the method should start on: the best of `ranked_phase1`."""
    return next(iter(ranked_phase1(models)), None)


def best_phase1_name(fallback: str, root: str | os.PathLike | None = None) -> str:
    """The best shipped phase-1 student's name, else `fallback` (what the benchmarks measure by default)."""
    best = best_phase1(list_shipped(root))
    return best.name if best is not None else fallback


def shipped_pair(models: list[ShippedModel]) -> tuple[ShippedModel | None, ShippedModel | None]:
    """(phase 1, reflected) to compare: the best reflected model (validation accuracy) with its own parent when
    one ships, else the first of each role. Best, not first by name: a later reflection run that ships beside an
    earlier one is the one to show before-and-after on."""
    phase1 = [m for m in models if m.role == PHASE1]
    reflected = sorted((m for m in models if m.role == REFLECTED),
                       key=lambda m: -1.0 if m.val_acc is None else -m.val_acc)
    for r in reflected:
        parent = next((p for p in phase1 if p.name == r.parent), None)
        if parent is not None:
            return parent, r
    return (phase1[0] if phase1 else None), (reflected[0] if reflected else None)


def shipped_baseline(models: list[ShippedModel]) -> ShippedModel | None:
    """The answer-only baseline to measure the phase-1 students against, where one ships (the first)."""
    return next((m for m in models if m.role == BASELINE), None)


def import_shipped_traces(db: str | os.PathLike, models: list[ShippedModel]) -> dict[str, int | str]:
    """File each shipped model's cached traces in the store under its name (and iteration), once: a file already
    imported for that model is left alone, so calling this at every start is safe. Returns {name: traces imported
    now (0 when already there) or the error message}; one bad file never stops the others. A baseline's traces are
    not filed: they hold an answer and no rationale, nothing to curate into reflection data (Compare and Results
    read them from their file)."""
    from tinythinker.store import Store, StoreError

    out: dict[str, int | str] = {}
    todo = [m for m in models if m.has_traces and m.role != BASELINE]
    if not todo:
        return out
    with Store(db) as store:
        for m in todo:
            try:
                # Traces already stored (an earlier start) are skipped, one by one: only new ones are added.
                out[m.name] = len(store.import_file(m.traces_path, model=m.name, iteration=m.iteration,
                                                    on_duplicate="skip"))
            except StoreError as e:
                log.warning("shipped traces of %s not imported: %s", m.name, e)
                out[m.name] = str(e)
    return out


def read_cached_traces(model: ShippedModel):
    """The shipped validation traces."""
    return read_traces(model.traces_path) if model.has_traces else []


# -- the questions the cached traces hold (first use, without benchmark data) ------------------------------------

BENCHMARK_NAMES = {"csqa": "CSQA", "obqa": "OBQA", "strategyqa": "StrategyQA"}
DATA_HINT = "start with --data-dir DIR (or set TINYTHINKER_DATA_DIR) for the whole split"


def cached_questions(benchmark: str, split: str, root: str | os.PathLike | None = None,
                     models: list[ShippedModel] | None = None) -> list[Question]:
    """The `benchmark` `split` questions the shipped models' cached traces hold, in split order (trace i is
    question i of the project's split, so question # i means the same as with the data): the longest such list
    among the shipped models (`models`, else those under `root`) whose shipped.json `data` and `split` match (a
    model without `data`: when every question's source is `benchmark`). [] when none are cached for that split;
    an unreadable traces file is skipped (logged)."""
    found: list[tuple[str, list[Question]]] = []
    for m in models if models is not None else list_shipped(root):
        if not m.has_traces or m.split != split or (m.data is not None and m.data != benchmark):
            continue
        try:
            questions = trace_questions(m.traces_path)
        except (OSError, ValueError) as e:
            log.warning("cached questions of %s not read: %s", m.name, e)
            continue
        if m.data is None and any(q.source != benchmark for q in questions):
            continue
        found.append((m.name, questions))
    if not found:
        return []
    name, best = max(found, key=lambda f: len(f[1]))
    for other, questions in found:
        if [q.id for q in questions] != [q.id for q in best[:len(questions)]]:
            log.warning("the cached traces of %s and %s are not on the same %s %s questions in the same order; "
                        "showing those of %s", other, name, benchmark, split, name)
    return best


def cached_questions_note(n: int, benchmark: str, split: str, data_dir: str | os.PathLike | None = None) -> str:
    """The line shown with a question taken from the cached traces: why, how many, and how to get them all.
    `data_dir`: the data folder that could not be read (None: there is none)."""
    why = "no data folder" if data_dir is None else f"no readable {benchmark} data in {data_dir}"
    return (f"{why}: these are the {n} {BENCHMARK_NAMES.get(benchmark, benchmark)} {split} questions cached with "
            f"the shipped students; {DATA_HINT}")


def cached_range_error(index: int, n: int, benchmark: str, split: str) -> str:
    """What a question # beyond the cached questions gets."""
    return (f"question #: {index} is outside 0..{n - 1}: without the benchmark data only the first {n} "
            f"{BENCHMARK_NAMES.get(benchmark, benchmark)} {split} questions (cached with the shipped students) are "
            f"here; {DATA_HINT}")


# -- how a model answers ----------------------------------------------------------------------------------------

DEFAULT_SETTINGS = {"stage_type": DEFAULT_STAGE_TYPE, "answer_format": "letter", "restrict_answer": "free"}


def _run_config(folder: Path, runs_dir: Path | None) -> tuple[Path, dict[str, Any]] | None:
    """The run config.json (one with a `command`) at or above `folder`, not above `runs_dir`."""
    folder = folder.resolve()
    stop = runs_dir.resolve() if runs_dir is not None else None
    for candidate in (folder, *folder.parents):
        if stop is not None and candidate == stop:
            return None
        path = candidate / "config.json"
        if path.is_file():
            try:
                d = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                d = None
            if isinstance(d, dict) and "command" in d:
                return candidate, d
    return None


def answer_settings(model: str | os.PathLike, runs_dir: str | os.PathLike | None = None,
                    shipped: list[ShippedModel] | None = None) -> dict[str, str]:
    """{stage_type, answer_format, restrict_answer} a model was trained for, so every view runs it that way:
    a shipped model's own; a folder inside a run: that run's config.json (a phase-2 run: its phase-1 run's, as
    phase 2 evaluates with); anything else (a named student, a hub id): the library's defaults."""
    text = str(model)
    for m in shipped if shipped is not None else list_shipped():
        if m.name == text or str(m.folder) == text:
            return m.answer_settings()
    folder = Path(text)
    if not folder.is_dir():
        return dict(DEFAULT_SETTINGS)
    found = _run_config(folder, Path(runs_dir) if runs_dir is not None else None)
    if found is None:
        return dict(DEFAULT_SETTINGS)
    _, config = found
    if config.get("command") == "reflect" and config.get("from_run"):
        source = Path(config["from_run"])
        parent = _run_config(source, None) if source.is_dir() else None
        config = parent[1] if parent is not None else {}
    settings = dict(DEFAULT_SETTINGS)
    if config.get("stage_type") in STAGE_TYPES:
        settings["stage_type"] = config["stage_type"]
    if config.get("answer_format") in ANSWER_FORMATS:
        settings["answer_format"] = config["answer_format"]
    try:
        settings["restrict_answer"] = answer_mode(config.get("restrict_answer", False))
    except ValueError:
        pass
    return settings
