"""Push a datasets-format store export (`store export --format hf`) to the Hugging Face Hub.

    push_export("annotations/reflection-v1", "user/tinythinker-pairs")   # -> the dataset's URL

The repository gets two configs, `pairs` and `traces` (each one `train` split), and the export's dataset card. The
local export is written first and never touched here: when the Hub cannot be reached (HF_HUB_OFFLINE, no network,
a timeout) the push fails at once with HubUnreachable, whose message says so and where the complete local export is.
"""

from __future__ import annotations

import os
from pathlib import Path

from tinythinker.store.card import CARD
from tinythinker.store.validate import StoreError

CONFIGS = ("pairs", "traces")
PROBE_TIMEOUT_S = 10.0  # one request to the Hub before anything heavy; a dead network fails here, not in retries


class HubUnreachable(StoreError):
    """The Hub could not be reached; the local export is complete."""


def _offline() -> bool:
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import; the environment is read again for a value set later.
    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _connection_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import OfflineModeIsEnabled

    errors: list[type[BaseException]] = [OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx", "requests"):  # whichever HTTP client this huggingface_hub uses
        try:
            mod = __import__(module)
        except ImportError:
            continue
        for name in ("TransportError", "ConnectionError", "Timeout"):
            cls = getattr(mod, name, None)
            # httpx's Timeout is a setting, not an error: only exception classes go in an except clause
            if isinstance(cls, type) and issubclass(cls, BaseException):
                errors.append(cls)
    return tuple(errors)


def _unreachable(folder: Path, repo_id: str, why: str, started: bool = False) -> HubUnreachable:
    pushed = "the push did not finish" if started else "nothing was pushed"
    return HubUnreachable(f"could not reach the Hugging Face Hub to push {repo_id} ({why}); {pushed}. "
                          f"The local export at {folder} is complete: push it again once the Hub is reachable "
                          f"(from the command line: `python -m tinythinker store export --format hf --out {folder} "
                          f"--overwrite --push-to-hub {repo_id}`), or copy the folder by hand")


def _probe(endpoint: str) -> None:
    from huggingface_hub.utils import get_session

    get_session().head(endpoint, timeout=PROBE_TIMEOUT_S)


def check_export(folder: Path) -> None:
    """A datasets-format export: both saved datasets and the card are there."""
    from tinythinker.store.files import _is_dataset_dir

    if not folder.is_dir():
        raise StoreError(f"{folder}: no such export folder")
    missing = [c for c in CONFIGS if not _is_dataset_dir(folder / c)]
    if missing:
        raise StoreError(f"{folder} is not a datasets-format export (no saved {' or '.join(missing)} dataset); "
                         "export it in the hf (datasets) format to push it to the Hub")
    if not (folder / CARD).is_file():
        raise StoreError(f"{folder} has no {CARD} (dataset card); export it again with this version")


def push_export(folder: str | os.PathLike, repo_id: str, token: str | None = None, private: bool | None = None
                ) -> str:
    """Push the export in `folder` to the dataset repository `repo_id` (created when missing): the card first, so
    that `datasets` adds its configs to it rather than writing a bare one, then `pairs` and `traces` as configs.
    Returns the dataset's URL. HubUnreachable when the Hub cannot be reached, a StoreError for any other refusal
    (a bad repo id, no or a wrong token); either way the local export stays as it was."""
    folder = Path(folder)
    check_export(folder)
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise StoreError("--push-to-hub needs a repository id such as user/name")
    repo_id = repo_id.strip()
    if _offline():
        raise _unreachable(folder, repo_id, "HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    errors = _connection_errors()
    try:
        _probe(constants.ENDPOINT)
    except errors as e:
        raise _unreachable(folder, repo_id, f"{constants.ENDPOINT}: {type(e).__name__}: {e}") from None
    try:
        import datasets
        from datasets import load_from_disk

        api = HfApi(token=token)
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_file(path_or_fileobj=str(folder / CARD), path_in_repo=CARD, repo_id=repo_id,
                        repo_type="dataset", commit_message="TinyThinker export: dataset card")
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            for name in CONFIGS:
                load_from_disk(str(folder / name)).push_to_hub(
                    repo_id, config_name=name, split="train", token=token, set_default=name == "pairs",
                    commit_message=f"TinyThinker export: {name}")
        finally:
            if bars:
                datasets.enable_progress_bars()
    except errors as e:
        raise _unreachable(folder, repo_id, f"{type(e).__name__}: {e}", started=True) from None
    except (HfHubHTTPError, HFValidationError) as e:
        raise StoreError(f"the Hugging Face Hub refused the push to {repo_id}: {_one_line(e)}. The local export at "
                         f"{folder} is complete") from None
    return str(getattr(url, "url", url))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
