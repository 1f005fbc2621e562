"""A small, real HTTP server that speaks the Gemini REST API (v1beta) on 127.0.0.1.

The real google-genai SDK is pointed at it (GEMINI_BASE_URL / GeminiConfig.base_url).
Tests script what each endpoint does next (answers, errors, rate limits, refusals,
cut streams, slow answers) and read back the requests it received. It is independent
of pytest so process-level tests can run it next to a worker subprocess.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VALID_KEY = "test-key-valid"
BAD_KEY_BODY = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ],
    }
}
PROSE = "The tide came in slowly over the black rocks, and the keeper watched it."
USAGE = {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18}


@dataclass
class Reply:
    """One scripted behaviour for the next request to an endpoint."""

    status: int = 200
    body: Any = None  # JSON for non-stream answers
    chunks: list[Any] | None = None  # JSON objects for a stream
    cut_after: int | None = None  # close the connection after this many chunks
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def error_body(
    code: int, status: str, message: str, details: list[Any] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "status": status, "message": message, "details": details or []}}


def text_response(
    text: str, finish: str = "STOP", usage: dict[str, int] | None = USAGE
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": finish,
                "index": 0,
            }
        ],
        "modelVersion": "fake",
    }
    if usage:
        body["usageMetadata"] = usage
    return body


def refused_candidate(reason: str = "SAFETY") -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": []}, "finishReason": reason, "index": 0}
        ]
    }


def blocked_prompt(reason: str = "SAFETY") -> dict[str, Any]:
    return {"promptFeedback": {"blockReason": reason}, "usageMetadata": {"promptTokenCount": 5}}


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    at: float


class FakeGemini:
    """`start()`, point the SDK at `base_url`, script with `queue()`, read `requests`."""

    ENDPOINTS = ("generateContent", "streamGenerateContent", "batchEmbedContents", "get")

    def __init__(self, key: str = VALID_KEY) -> None:
        self.key = key
        self.requests: list[Recorded] = []
        self._script: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- control ------------------------------------------------------------------

    def start(self) -> FakeGemini:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def queue(self, endpoint: str, *replies: Reply) -> None:
        """Script the next replies of `endpoint` (one of ENDPOINTS), in order."""
        assert endpoint in self.ENDPOINTS, endpoint
        with self._lock:
            self._script[endpoint].extend(replies)

    def calls(self, endpoint: str) -> list[Recorded]:
        return [r for r in self.requests if _endpoint(r.method, r.path) == endpoint]

    def next_reply(self, endpoint: str) -> Reply | None:
        with self._lock:
            return self._script[endpoint].popleft() if self._script[endpoint] else None


def _endpoint(method: str, path: str) -> str:
    if method == "GET":
        return "get"
    return path.rsplit(":", 1)[-1]


class _Handler(BaseHTTPRequestHandler):
    owner: FakeGemini
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "x-goog-api-key"}
        self.owner.requests.append(Recorded(method, path, query, headers, body, time.monotonic()))
        if self.headers.get("x-goog-api-key") != self.owner.key:
            self._json(400, BAD_KEY_BODY)
            return
        endpoint = _endpoint(method, path)
        reply = self.owner.next_reply(endpoint) or self._default(endpoint, path, body)
        time.sleep(reply.delay)
        if reply.chunks is not None:
            self._stream(reply)
        else:
            self._json(reply.status, reply.body, reply.headers)

    def _default(self, endpoint: str, path: str, body: Any) -> Reply:
        if endpoint == "get":
            name = path.split("/models/", 1)[-1]
            return Reply(
                body={"name": f"models/{name}", "displayName": name, "inputTokenLimit": 1048576}
            )
        if endpoint == "batchEmbedContents":
            return Reply(body={"embeddings": [_embedding(r) for r in body["requests"]]})
        if endpoint == "streamGenerateContent":
            words = PROSE.split()
            return Reply(
                chunks=[
                    text_response(" ".join(words[i : i + 4]) + " ", usage=None)
                    for i in range(0, len(words), 4)
                ]
                + [text_response("", usage=USAGE)]
            )
        if body and body.get("generationConfig", {}).get("responseMimeType") == "application/json":
            return Reply(body=text_response(json.dumps(_outline(body))))
        return Reply(body=text_response("A keeper finds a door in the sea and opens it."))

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=UTF-8")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for n, chunk in enumerate(reply.chunks or []):
            if reply.cut_after is not None and n >= reply.cut_after:
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)  # mid-stream, no terminating chunk
                return
            self._send_chunk(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
            time.sleep(reply.delay)
        self._send_chunk(b"")

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _embedding(request: dict[str, Any]) -> dict[str, Any]:
    size = int(request.get("outputDimensionality") or 3072)
    text = json.dumps(request.get("content"))
    return {"values": [((hash(text) >> (i % 32)) % 97 + 1) / 97.0 for i in range(size)]}


def _outline(body: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(body)
    match = re.search(r"exactly (\d+)", text) or re.search(r"bullet_count[^0-9]{0,12}(\d+)", text)
    count = int(match.group(1)) if match else 4
    return {
        "title": "The Door at Low Tide",
        "bullets": [f"Beat {i + 1} of the chapter" for i in range(count)],
    }
