"""Reading JSON Lines and JSON-array files record by record, with locations for error messages."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinythinker.data.errors import DataError, MissingDataError

BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark: Windows tools write one; Hugging Face datasets reads past it


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


def describe_path(path: Path) -> str:
    """What is at `path`, in words ("a folder", "a named pipe", ...), for messages that refuse it."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "nothing (it does not exist)"
    for test, words in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                        (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "not a regular file"


def need_file(path: str | Path, what: str = "") -> Path:
    """`path` if it is a regular file (or a link to one). Missing: MissingDataError. A folder, a device, a pipe:
    DataError saying what it is (reading /dev/zero or a pipe would never end). `what` prefixes the message."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise MissingDataError(f"{what}{path} does not exist")
    raise DataError(f"{what}{path} is {describe_path(path)}, not a regular file")


def json_error(e: json.JSONDecodeError) -> str:
    """The decoder's complaint and its column, 'at' once: some of its messages already end in 'at'."""
    return f"{e.msg} column {e.colno}" if e.msg.endswith(" at") else f"{e.msg} at column {e.colno}"


REPEATED = ("appears twice in one JSON object; only one value could be kept, so the record is refused rather "
            "than a value dropped")


class RepeatedKeyError(ValueError):
    """A JSON object names one key twice: plain json keeps the last value and drops the first without a word."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"key {path!r} appears twice in one object")


def _first_repeat(value: Any, prefix: str) -> str | None:
    if isinstance(value, _Repeated):
        return prefix + value.repeated
    if isinstance(value, list):
        for i, v in enumerate(value):
            hit = _first_repeat(v, f"{prefix.rstrip('.')}[{i}].")
            if hit is not None:
                return hit
    return None


class _Repeated(dict):
    repeated: str  # dotted path, below this object, of the first key that appears twice


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    repeated = None
    for k, v in pairs:
        if repeated is None:
            repeated = k if k in obj else _first_repeat(v, f"{k}.")
        obj[k] = v
    if repeated is None:
        return obj
    out = _Repeated(obj)
    out.repeated = repeated
    return out


def repeated_key(value: Any) -> str | None:
    """The dotted path of the first repeated key in a value parsed by `loads(..., check=False)`, or None."""
    return _first_repeat(value, "")


def loads(text: str | bytes, check: bool = True) -> Any:
    """json.loads that refuses a repeated key (RepeatedKeyError naming its dotted path, e.g. 'options.A');
    with check=False the caller asks `repeated_key` itself (per record of an array)."""
    value = json.loads(text, object_pairs_hook=_object)
    hit = _first_repeat(value, "") if check else None
    if hit is not None:
        raise RepeatedKeyError(hit)
    return value


def decode(raw: bytes, loc_error, first: bool = False) -> str:
    """UTF-8 text of one line (a leading BOM dropped on the first); a bad byte is an error at its column."""
    if first and raw.startswith(BOM):
        raw = raw[len(BOM):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise loc_error(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); save the file "
                        "as UTF-8") from None


def read_jsonl(path: Path) -> Iterator[tuple[Loc, dict[str, Any]]]:
    """Yield (location, object) per non-blank line; a line that is not a JSON object is a DataError."""
    need_file(path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            loc = Loc(str(path), line=n)
            text = decode(raw, loc.error, first=n == 1)
            if not text.strip():
                continue  # blank lines (often a trailing one) carry no record
            try:
                obj = loads(text)
            except json.JSONDecodeError as e:
                raise loc.error(f"malformed JSON ({json_error(e)})") from None
            except RepeatedKeyError as e:
                raise loc.error(REPEATED, field=e.path) from None
            if not isinstance(obj, dict):
                raise loc.error(f"expected a JSON object, got {type(obj).__name__}")
            yield loc, obj


def read_json_array(path: Path) -> Iterator[tuple[Loc, dict[str, Any]]]:
    """Yield (location, object) per element of a JSON array; records are numbered from 1."""
    need_file(path)
    raw = path.read_bytes()
    if raw.startswith(BOM):
        raw = raw[len(BOM):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {column}); save the file as UTF-8",
                        file=path, line=line) from None
    try:
        data = loads(text, check=False)
    except json.JSONDecodeError as e:
        hint = ("; the file starts with '[', so it is read as one JSON array, and text follows the array"
                if e.msg == "Extra data" else "")
        raise DataError(f"malformed JSON ({json_error(e)}){hint}", file=path, line=e.lineno) from None
    if not isinstance(data, list):
        raise DataError(f"expected a JSON array of records, got {type(data).__name__}", file=path)
    for n, obj in enumerate(data, start=1):
        loc = Loc(str(path), record=n)
        if not isinstance(obj, dict):
            raise loc.error(f"expected a JSON object, got {type(obj).__name__}")
        hit = repeated_key(obj)
        if hit is not None:
            raise loc.error(REPEATED, field=hit)
        yield loc, obj


def read_records(path: Path) -> Iterator[tuple[Loc, dict[str, Any]]]:
    """A JSON array (`[...]`, as the paper's json.dump writes) or JSON Lines, whichever the file holds."""
    need_file(path)
    with open(path, "rb") as f:
        head = f.read(4096).removeprefix(BOM).lstrip()
    if head.startswith(b"["):
        return read_json_array(path)
    return read_jsonl(path)


def get(obj: dict[str, Any], key: str, loc: Loc, kind: type | tuple[type, ...] = str,
        field: str | None = None) -> Any:
    """obj[key], checked for presence and type; `field` is the dotted name used in the message."""
    name = field or key
    if key not in obj:
        raise loc.error("missing", field=name)
    value = obj[key]
    kinds = (kind,) if isinstance(kind, type) else tuple(kind)
    # JSON true / false are Python bools, which are ints: an id or a count of `true` is a mistake, not 1.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        want = " or ".join(k.__name__ for k in kinds)
        raise loc.error(f"expected {want}, got {type(value).__name__}", field=name)
    if isinstance(value, str) and not value.strip():
        raise loc.error("empty", field=name)
    return value
