"""Simulated LLM providers on loopback: an OpenAI-compatible chat-completions endpoint per
provider name, each with a latency and a status that can be changed while it runs.

A real router (the LiteLLM proxy) calls them over HTTP as it would call a provider, so its
own metrics measure their latency (``litellm_llm_api_latency_metric``), tokens and errors::

    with Upstream() as up:
        up.set("groq", delay=1.5)
        # LiteLLM: {model: groq/llama-3.3-70b-versatile, api_base: up.base("groq")}
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Behaviour", "Upstream"]


@dataclass
class Behaviour:
    #: Seconds before the answer.
    delay: float = 0.0
    #: HTTP status of the answer: 200, or an error such as 429 or 503.
    status: int = 200


class Upstream:
    """One server; provider ``name`` answers under ``/name/``. Thread-safe."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._behaviour: dict[str, Behaviour] = {}
        self._lock = threading.Lock()
        self.served: Counter[str] = Counter()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                name = self.path.strip("/").split("/", 1)[0]
                behaviour = upstream.behaviour(name)
                if behaviour.delay:
                    time.sleep(behaviour.delay)
                try:
                    request = json.loads(raw or b"{}")
                except ValueError:
                    request = {}
                body: dict[str, Any]
                if behaviour.status != 200:
                    body = {"error": {"message": f"simulated {behaviour.status}", "type": "simulated",
                                      "code": behaviour.status}}
                else:
                    with upstream._lock:
                        upstream.served[name] += 1
                    body = {
                        "id": f"chatcmpl-{name}-{upstream.served[name]}", "object": "chat.completion",
                        "created": int(time.time()), "model": str(request.get("model", name)),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": f"hello from {name}"}}],
                        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
                    }
                if behaviour.status == 200 and request.get("stream"):
                    self._stream(body)
                    return
                data = json.dumps(body).encode()
                self.send_response(behaviour.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict[str, Any]) -> None:
                """The answer as server-sent events, two content chunks then the usage."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                base = {k: body[k] for k in ("id", "created", "model")}
                text = body["choices"][0]["message"]["content"]
                events = [
                    {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": part}, "finish_reason": None}]}
                    for part in (text[: len(text) // 2], text[len(text) // 2:])
                ] + [{**base, "object": "chat.completion.chunk",
                      "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": body["usage"]}]
                for event in [*(f"data: {json.dumps(e)}\n\n" for e in events), "data: [DONE]\n\n"]:
                    raw = event.encode()
                    self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def base(self, name: str) -> str:
        """The ``api_base`` of provider ``name`` (OpenAI style, ending in /v1)."""
        return f"http://127.0.0.1:{self.port}/{name}/v1"

    def behaviour(self, name: str) -> Behaviour:
        with self._lock:
            b = self._behaviour.get(name, Behaviour())
            return Behaviour(b.delay, b.status)

    def set(self, name: str, *, delay: float | None = None, status: int | None = None) -> None:
        with self._lock:
            b = self._behaviour.setdefault(name, Behaviour())
            if delay is not None:
                b.delay = delay
            if status is not None:
                b.status = status

    def start(self) -> Upstream:
        self._thread = threading.Thread(target=self._server.serve_forever, name="sim-upstream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()
