"""The Hugging Face hub as a source of the benchmarks, for users with network access.

Rows are reshaped into the local files' layout so one parser (and one set of checks) serves both sources.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from typing import Any

from tinythinker.data.errors import MissingDataError

# (dataset id, config); OBQA's "additional" config carries fact1, the open-book fact used as recall.
HUB_DATASETS: dict[str, tuple[str, str | None]] = {
    "csqa": ("tau/commonsense_qa", None),
    "obqa": ("allenai/openbookqa", "additional"),
    "strategyqa": ("ChilleD/StrategyQA", None),
}
# Our parts -> hub splits. CSQA's hub "validation" is the official dev set, the paper's test set.
HUB_SPLITS: dict[str, dict[str, str]] = {
    "csqa": {"train": "train", "test": "validation"},
    "obqa": {"train": "train", "dev": "validation", "test": "test"},
    "strategyqa": {"train": "train", "test": "test"},
}
LOCAL_HINT = ("Without network access, point at local files with --data-dir DIR or the environment variable "
              "TINYTHINKER_DATA_DIR=DIR (or put them in ./data), laid out as docs/DATA.md describes: "
              "this split reads DIR/{file}.")


def hub_rows(name: str, part: str, local_file: str) -> tuple[str, list[dict[str, Any]]]:
    """(a label naming the hub split, rows in the local files' layout); `local_file` is named in the error."""
    repo, config = HUB_DATASETS[name]
    split = HUB_SPLITS[name][part]
    label = f"hub:{repo}" + (f"/{config}" if config else "") + f"[{split}]"
    reachable = hub_reachable()
    try:
        import datasets

        with contextlib.nullcontext() if reachable else _offline_mode():
            ds = datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # offline, unknown id, moved files: all end the same way for the user
        why = "" if reachable else "the hub is unreachable from this machine and the dataset is not in the local cache; "
        raise MissingDataError(
            f"could not load {name} ({label}) from the Hugging Face hub: {why}{type(e).__name__}: {e}. "
            + LOCAL_HINT.format(file=local_file)
        ) from e
    return label, [_reshape(name, dict(row)) for row in ds]


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """One TCP connection to the hub, so that an offline machine fails in seconds: `datasets` itself retries
    every request five times with back-off, a minute of silence before the same error."""
    import os

    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_mode():
    """`datasets` and `huggingface_hub` in offline mode for one call, so a dataset cached earlier still loads
    (both read these flags at call time, not only at import)."""
    from unittest import mock

    import datasets.config
    import huggingface_hub.constants

    with mock.patch.object(datasets.config, "HF_HUB_OFFLINE", True), \
            mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True):
        yield


def _choices(choices: dict[str, list[str]]) -> list[dict[str, str]]:
    return [{"label": lab, "text": text} for lab, text in zip(choices["label"], choices["text"], strict=True)]


def _reshape(name: str, row: dict[str, Any]) -> dict[str, Any]:
    if name == "csqa":  # {id, question, question_concept, choices: {label: [..], text: [..]}, answerKey}
        return {"id": row.get("id"), "answerKey": row.get("answerKey"),
                "question": {"stem": row.get("question"), "question_concept": row.get("question_concept"),
                             "choices": _choices(row.get("choices") or {"label": [], "text": []})}}
    if name == "obqa":  # {id, question_stem, choices, answerKey, fact1, humanScore, clarity, ...}
        out = {k: row[k] for k in ("id", "answerKey", "fact1", "humanScore", "clarity") if k in row}
        out["question"] = {"stem": row.get("question_stem"),
                           "choices": _choices(row.get("choices") or {"label": [], "text": []})}
        return out
    # StrategyQA: the official field names; a hub copy without ids gets one from its question text (stable).
    if "qid" not in row:
        row["qid"] = row["id"] if "id" in row else "h-" + hashlib.sha256(
            str(row.get("question", "")).encode("utf-8")).hexdigest()[:16]
    return row
