"""Chat completions over any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, TGI) with a request cache.

Retries with exponential backoff (honouring `Retry-After`) on connection errors, timeouts, 408/409/429 and 5xx are
the `openai` client's own (`max_retries`); we count the attempts it makes with an httpx event hook so that the run
can report them. A request that still fails raises `TeacherRequestError` and nothing is cached for it.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import openai

from tinythinker.teacher.cache import ResponseCache, request_key

# Local servers ignore the key, but the client refuses to start without one.
LOCAL_PLACEHOLDER_KEY = "sk-no-key-needed"


class TeacherRequestError(RuntimeError):
    """A request that failed after all retries (server down, timeouts, rate limits, server errors)."""


@dataclass
class Choice:
    content: str
    finish_reason: str | None


@dataclass
class ClientStats:
    requests: int = 0  # answered requests sent to the server (not counting the cache)
    cache_hits: int = 0
    attempts: int = 0  # HTTP attempts, retries included
    retries: int = 0
    failed_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # tokens of answers read from the cache (already paid for)
    cached_completion_tokens: int = 0
    http_errors: Counter = field(default_factory=Counter)  # status code -> count, retried ones included
    errors: Counter = field(default_factory=Counter)  # final error class -> count

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["http_errors"] = {str(k): v for k, v in sorted(self.http_errors.items())}
        d["errors"] = dict(self.errors)
        return d


def resolve_api_key(api_key_env: str, base_url: str | None) -> str:
    key = os.environ.get(api_key_env)
    if key:
        return key
    if base_url:
        return LOCAL_PLACEHOLDER_KEY
    raise ValueError(
        f"no API key: set the environment variable {api_key_env} (or name another one with --api-key-env), "
        "or point --base-url at a server that needs none"
    )


class TeacherClient:
    def __init__(self, *, model: str, cache: ResponseCache, base_url: str | None = None,
                 api_key: str = LOCAL_PLACEHOLDER_KEY, timeout: float = 60.0, max_retries: int = 4):
        self.model = model
        self.cache = cache
        self.stats = ClientStats()
        self._lock = threading.Lock()
        http_client = openai.DefaultHttpxClient(
            event_hooks={"request": [self._on_request], "response": [self._on_response]}
        )
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout,
                                    max_retries=max_retries, http_client=http_client)

    def _on_request(self, request: Any) -> None:
        with self._lock:
            self.stats.attempts += 1
            if int(request.headers.get("x-stainless-retry-count", "0") or 0) > 0:
                self.stats.retries += 1

    def _on_response(self, response: Any) -> None:
        if response.status_code >= 400:
            with self._lock:
                self.stats.http_errors[response.status_code] += 1

    def _create(self, body: dict[str, Any]) -> Any:
        try:
            return self.client.chat.completions.create(**body)
        except openai.APIStatusError as e:
            with self._lock:
                self.stats.failed_requests += 1
                self.stats.errors[f"HTTP {e.status_code}"] += 1
            raise TeacherRequestError(f"the server answered HTTP {e.status_code}: {e.message}") from e
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            kind = "timeout" if isinstance(e, openai.APITimeoutError) else "connection error"
            with self._lock:
                self.stats.failed_requests += 1
                self.stats.errors[kind] += 1
            raise TeacherRequestError(f"{kind} talking to {self.client.base_url}") from e

    def _fetch(self, body: dict[str, Any], key: str, question_id: str) -> dict[str, Any]:
        cached = self.cache.get(key)
        if cached is not None:
            with self._lock:
                self.stats.cache_hits += 1
                self.stats.cached_prompt_tokens += cached["usage"]["prompt_tokens"]
                self.stats.cached_completion_tokens += cached["usage"]["completion_tokens"]
            return cached
        resp = self._create(body)
        usage = {
            "prompt_tokens": int(getattr(resp.usage, "prompt_tokens", 0) or 0),
            "completion_tokens": int(getattr(resp.usage, "completion_tokens", 0) or 0),
        }
        entry = {
            "key": key,
            "question_id": question_id,
            "model": resp.model or body["model"],
            "choices": [
                {"content": (c.message.content if c.message else None) or "", "finish_reason": c.finish_reason}
                for c in (resp.choices or [])
            ],
            "usage": usage,
        }
        self.cache.put(entry)
        with self._lock:
            self.stats.requests += 1
            self.stats.prompt_tokens += usage["prompt_tokens"]
            self.stats.completion_tokens += usage["completion_tokens"]
        return entry

    def sample(self, messages: list[dict[str, str]], *, n: int, temperature: float, max_tokens: int,
               round_index: int, question_id: str, max_parts: int | None = None) -> list[Choice]:
        """Ask for `n` answers. Servers that ignore `n` (llama.cpp, Ollama) return fewer choices per request, so
        we ask again for the rest, up to `max_parts` requests (default `n`)."""
        choices: list[Choice] = []
        for part in range(max_parts or n):
            want = n - len(choices)
            if want <= 0:
                break
            body = {"model": self.model, "messages": messages, "n": want, "temperature": temperature,
                    "max_tokens": max_tokens}
            entry = self._fetch(body, request_key(body, round_index, part), question_id)
            got = [Choice(c["content"], c.get("finish_reason")) for c in entry["choices"]][:want]
            if not got:
                break
            choices.extend(got)
        return choices
