"""An append-only JSONL cache of teacher answers, keyed by the request.

One line per answered request: `{"key", "question_id", "choices": [{"content", "finish_reason"}], "usage", "model"}`.
Each line is flushed as soon as its answer arrives, so an interrupted run loses at most the line being written; a
torn last line is cut off when the cache is opened again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any


def request_key(body: dict[str, Any], round_index: int, part: int) -> str:
    # Sampling at temperature > 0 makes the same body a different request each time it is re-asked, so the
    # round and part (see client.sample) belong to the key.
    blob = json.dumps({"body": body, "round": round_index, "part": part}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # An interrupted write: drop the torn tail so that appends start on a fresh line.
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        for lineno, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self._entries[entry["key"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{self.path}, line {lineno}: not a cache entry ({e}); "
                                 "delete the line or the file to re-ask") from None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._entries[entry["key"]] = entry
