"""Errors for bad or missing data: every message says which file, which line (or record) and which field."""

from __future__ import annotations

from pathlib import Path


def where(file: str | Path | None = None, line: int | None = None, record: int | None = None,
          field: str | None = None) -> str:
    parts = []
    if file is not None:
        parts.append(str(file))
    if line is not None:
        parts.append(f"line {line}")
    if record is not None:
        parts.append(f"record {record}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ", ".join(parts)


class DataError(ValueError):
    """A data file (or hub row) that cannot be read as promised. `file`, `line`, `record`, `field` locate it."""

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None,
                 record: int | None = None, field: str | None = None):
        self.file = None if file is None else str(file)
        self.line, self.record, self.field = line, record, field
        loc = where(file, line, record, field)
        super().__init__(f"{loc}: {message}" if loc else message)


class MissingDataError(DataError):
    """A file the requested split needs is not there (or the hub could not be reached)."""
