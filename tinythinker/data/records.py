"""Reading JSON Lines and JSON-array files record by record, with locations for error messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinythinker.data.errors import DataError


@dataclass(frozen=True)
class Loc:
    """Where a record came from: a JSONL line, a JSON-array record, or a hub row (then `file` names the hub)."""

    file: str
    line: int | None = None
    record: int | None = None

    def error(self, message: str, field: str | None = None) -> DataError:
        return DataError(message, file=self.file, line=self.line, record=self.record, field=field)

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file}, line {self.line}"
        return f"{self.file}, record {self.record}"


def read_jsonl(path: Path) -> Iterator[tuple[Loc, dict[str, Any]]]:
    """Yield (location, object) per non-blank line; a line that is not a JSON object is a DataError."""
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue  # blank lines (often a trailing one) carry no record
            loc = Loc(str(path), line=n)
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise loc.error(f"malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise loc.error(f"expected a JSON object, got {type(obj).__name__}")
            yield loc, obj


def read_json_array(path: Path) -> Iterator[tuple[Loc, dict[str, Any]]]:
    """Yield (location, object) per element of a JSON array; records are numbered from 1."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON ({e.msg})", file=path, line=e.lineno) from None
    if not isinstance(data, list):
        raise DataError(f"expected a JSON array of records, got {type(data).__name__}", file=path)
    for n, obj in enumerate(data, start=1):
        loc = Loc(str(path), record=n)
        if not isinstance(obj, dict):
            raise loc.error(f"expected a JSON object, got {type(obj).__name__}")
        yield loc, obj


def read_records(path: Path) -> Iterator[tuple[Loc, dict[str, Any]]]:
    """A JSON array (`[...]`, as the paper's json.dump writes) or JSON Lines, whichever the file holds."""
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        return read_json_array(path)
    return read_jsonl(path)


def get(obj: dict[str, Any], key: str, loc: Loc, kind: type | tuple[type, ...] = str,
        field: str | None = None) -> Any:
    """obj[key], checked for presence and type; `field` is the dotted name used in the message."""
    name = field or key
    if key not in obj:
        raise loc.error("missing", field=name)
    value = obj[key]
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise loc.error(f"expected {want}, got {type(value).__name__}", field=name)
    if isinstance(value, str) and not value.strip():
        raise loc.error("empty", field=name)
    return value
