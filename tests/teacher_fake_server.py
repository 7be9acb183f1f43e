"""A scripted OpenAI-compatible chat server on 127.0.0.1 for the teacher's fault tests.

`FakeChatServer(responder)`: for every POST to .../chat/completions the responder gets the request JSON and the
request's index (0, 1, ...) and returns a `Reply`. The server records every request body it saw.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (client timeouts)


def completion(contents: list[str], finish_reasons: list[str] | None = None, model: str = "fake-teacher",
               prompt_tokens: int = 100, completion_tokens_each: int = 40) -> dict[str, Any]:
    finish_reasons = finish_reasons or ["stop"] * len(contents)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": f, "logprobs": None}
            for i, (c, f) in enumerate(zip(contents, finish_reasons, strict=True))
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens_each * len(contents),
                  "total_tokens": prompt_tokens + completion_tokens_each * len(contents)},
    }


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body={"error": {"message": message, "type": "server_error", "code": status}},
                 headers=headers or {})


class FakeChatServer:
    def __init__(self, responder: Callable[[dict[str, Any], int], Reply], port: int = 0):
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    index = len(server.requests)
                    server.requests.append(body)
                if not self.path.endswith("/chat/completions"):
                    reply = error_reply(404, f"no route {self.path}")
                else:
                    reply = server.responder(body, index)
                if reply.delay:
                    time.sleep(reply.delay)
                data = json.dumps(reply.body or {}).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def user_question(body: dict[str, Any]) -> str:
    """The question line of a teacher request (the first line of the user turn)."""
    return body["messages"][-1]["content"].split("\n", 1)[0]
