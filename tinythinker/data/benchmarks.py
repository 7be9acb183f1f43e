"""Benchmarks -> Questions: CommonsenseQA, OpenBookQA, StrategyQA, a user's JSONL, or the paper's own files.

Where the data comes from: the `data_dir` argument, else env TINYTHINKER_DATA_DIR, else ./data if it exists,
else the Hugging Face hub. Splits (see splits.py): CSQA validation = 1,221 questions drawn from train with the
seed; OBQA validation = the official dev set; StrategyQA validation = 10% of train drawn with the seed.
`split="test"` reads the test files named in LOCAL_FILES.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinythinker.data import hub
from tinythinker.data.errors import DataError, MissingDataError
from tinythinker.data.questions import parse_arc, parse_strategyqa, parse_user, unique_ids
from tinythinker.data.records import Loc, describe_path, need_file, read_json_array, read_jsonl, read_records
from tinythinker.data.splits import (
    CSQA_VALIDATION_SIZE,
    STRATEGYQA_VALIDATION_FRACTION,
    fraction_size,
    seeded_split,
)
from tinythinker.types import Question

BENCHMARKS = ("csqa", "obqa", "strategyqa")
USER_FORMATS = ("jsonl", "paper")  # need `path=`: a user's JSONL, or a folder in the paper's released format
SPLITS = ("train", "validation", "test")
ENV_DATA_DIR = "TINYTHINKER_DATA_DIR"
HUB = "hub"  # data_dir="hub" skips local folders

# The files behind each part of a benchmark, relative to the data dir, in order of preference.
# OBQA's *_complete files are the same questions plus fact1, so they win when present.
LOCAL_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "csqa": {"train": ("csqa/train_rand_split.jsonl",), "test": ("csqa/dev_rand_split.jsonl",)},
    "obqa": {"train": ("obqa/train_complete.jsonl", "obqa/train.jsonl"),
             "dev": ("obqa/dev_complete.jsonl", "obqa/dev.jsonl"),
             "test": ("obqa/test_complete.jsonl", "obqa/test.jsonl")},
    "strategyqa": {"train": ("strategyqa/train.json",), "test": ("strategyqa/dev.json",)},
}


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The local data folder to read, or None for the hub: argument, else env, else ./data if it exists."""
    chosen = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR) or None
    if chosen is None:
        return Path("data").resolve() if Path("data").is_dir() else None
    if str(chosen) == HUB:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        how = "the data_dir argument" if data_dir is not None else f"${ENV_DATA_DIR}"
        if path.exists():
            raise DataError(f"data directory {path} (from {how}) is {describe_path(path)}, not a folder")
        raise MissingDataError(f"data directory {path} (from {how}) does not exist")
    return path


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def load_questions(name: str, split: str = "train", data_dir: str | Path | None = None, seed: int = 0,
                   limit: int | None = None, path: str | Path | None = None) -> list[Question]:
    """The questions of one split, in a fixed order. `name` is a benchmark, or "jsonl"/"paper" with `path`."""
    _check_split(split)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a whole number >= 0 (or None for all), got {limit!r}")
    if name in USER_FORMATS:
        if path is None:
            raise ValueError(f"--data {name} needs a path (path=... / --path)")
        if name == "jsonl":
            questions = _user_split(Path(path), split, seed)
        else:
            from tinythinker.data.paper import paper_questions

            questions = paper_questions(Path(path), split)
    elif name in BENCHMARKS:
        questions = _benchmark_split(name, split, resolve_data_dir(data_dir), seed)
    else:
        raise ValueError(f"unknown data {name!r}; choose one of {', '.join(BENCHMARKS + USER_FORMATS)}")
    if limit is not None:
        questions = questions[:limit]
    return questions


def _benchmark_split(name: str, split: str, root: Path | None, seed: int) -> list[Question]:
    if split == "test":
        return read_part(name, "test", root)
    if name == "obqa":
        return read_part(name, "train" if split == "train" else "dev", root)
    pool = read_part(name, "train", root)
    n_val = CSQA_VALIDATION_SIZE if name == "csqa" else fraction_size(len(pool), STRATEGYQA_VALIDATION_FRACTION)
    train, validation = seeded_split(pool, n_val, seed)
    return train if split == "train" else validation


_PARSERS: dict[str, Callable[[Loc, dict[str, Any], str], Question]] = {
    "csqa": parse_arc, "obqa": parse_arc, "strategyqa": parse_strategyqa,
}


def local_file(name: str, part: str, root: Path) -> Path:
    """The first existing candidate file for a part, or a MissingDataError naming what was looked for."""
    candidates = LOCAL_FILES[name][part]
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    for rel in candidates:
        if (root / rel).exists():
            need_file(root / rel, f"{name} {part} file ")  # there, but a folder or a device: say so
    names = " or ".join(str(root / rel) for rel in candidates)
    what = "test split" if part == "test" else f"{part} part"
    raise MissingDataError(f"{name} {what} needs {names}, which does not exist"
                           + (" (test files are deliberately left out of some data folders)" if part == "test"
                              else ""))


def read_part(name: str, part: str, root: Path | None) -> list[Question]:
    """All questions of one benchmark file (or hub split), checked, with unique ids."""
    parse = _PARSERS[name]
    id_field = "qid" if name == "strategyqa" else "id"
    if root is None:
        label, rows = hub.hub_rows(name, part, LOCAL_FILES[name][part][0])
        items = ((Loc(label, record=i), row) for i, row in enumerate(rows, start=1))
    else:
        file = local_file(name, part, root)
        label = str(file)
        items = read_json_array(file) if file.suffix == ".json" else read_jsonl(file)
    questions = unique_ids(((loc, parse(loc, obj, name)) for loc, obj in items), id_field)
    if not questions:
        raise DataError("holds no questions (the file is empty or blank lines only)", file=label)
    return questions


def read_user_file(path: Path) -> list[Question]:
    need_file(path)
    source = f"jsonl:{path.name}"
    questions = unique_ids((loc, parse_user(loc, obj, source)) for loc, obj in read_records(path))
    if not questions:
        raise DataError("holds no questions (the file is empty, blank lines only, or an empty array)", file=path)
    return questions


def _user_split(path: Path, split: str, seed: int) -> list[Question]:
    """A file is taken whole for whichever split is asked; a folder holds {split}.jsonl, and without a
    validation.jsonl its validation is 10% of train.jsonl drawn with the seed (train is then the rest)."""
    if path.is_file():
        return read_user_file(path)
    if not path.is_dir():
        if path.exists():
            raise DataError(f"{path} is {describe_path(path)}, not a JSONL file or a folder of them")
        raise MissingDataError(f"{path} does not exist")
    own = path / f"{split}.jsonl"
    if split == "test" or (path / "validation.jsonl").exists():
        return read_user_file(own)
    pool_file = path / "train.jsonl"
    pool = read_user_file(pool_file)
    if len(pool) < 2:
        raise DataError("needs at least 2 questions to hold some out for validation", file=pool_file)
    train, validation = seeded_split(pool, fraction_size(len(pool), STRATEGYQA_VALIDATION_FRACTION), seed)
    return train if split == "train" else validation
