"""Settings kept in the store (schema 0003): key -> a JSON value, e.g. the annotation overlap."""

from __future__ import annotations

import json
from typing import Any

from tinythinker.store.validate import StoreError, check_name, to_json

OVERLAP = "annotation.overlap"
MAX_OVERLAP = 20


def get_setting(store, key: str, default: Any = None) -> Any:
    r = store._one("SELECT value FROM settings WHERE key = ?", [key])
    return default if r is None else json.loads(r["value"])


def set_setting(store, key: str, value: Any, by: str | None = None) -> None:
    from tinythinker.store.core import _now

    key = check_name(key, "setting")
    row = {"key": key, "value": to_json(value, key, "setting"), "updated_by": by, "updated_at": _now()}
    with store._write():
        store.db["settings"].upsert(row, pk="key")


def get_overlap(store) -> int:
    """How many annotators label an item before it leaves the queue (1 when never set)."""
    value = get_setting(store, OVERLAP, 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def set_overlap(store, n: Any, by: str | None = None) -> int:
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_OVERLAP:
        raise StoreError(f"overlap must be a whole number from 1 to {MAX_OVERLAP}, got {n!r}")
    set_setting(store, OVERLAP, n, by=by)
    return n
