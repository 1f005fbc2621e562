"""A small, real HTTP server that speaks the Gemini REST API, on 127.0.0.1.

Point the real google-genai SDK at it (GeminiConfig.base_url, or GEMINI_BASE_URL for a
worker process). It answers like Gemini in late 2026 by default: the requested number of
outline bullets, prose streamed as server-sent events, embeddings of the requested size,
and a catalogue of current models (models.get, models.list). A model not in the
catalogue (every retired gemini-2.5/2.0/1.5 one, or an unknown name), or one asked for a
method it does not support, gets Google's 404 NOT_FOUND on every endpoint. Tests script
what an endpoint does next (errors, rate limits with Retry-After or RetryInfo, refusals,
cut streams, slow or dropped answers), read back the requests it received, and compare
what it served each model (`served`). It needs only the standard library, no pytest:

    with FakeGemini() as fake:
        fake.queue("generateContent", error_reply(429, retry_after=1))
        ...  # call the SDK with base_url=fake.base_url, api_key=VALID_KEY
        assert len(fake.calls("generateContent")) == 2

`python -m tests.fakegemini [PORT]` runs it on its own and prints its base URL.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakememory import is_memory, memory_answer
from tests.fakeserver import ScriptedServer

VALID_KEY = "test-key-valid"
ENDPOINTS = (
    "generateContent",
    "streamGenerateContent",
    "embedContent",
    "batchEmbedContents",
    "get",
    "list",
)
#: The model method each endpoint needs the model to list (get and list need none).
NEEDS_METHOD = {
    "generateContent": "generateContent",
    "streamGenerateContent": "generateContent",
    "embedContent": "embedContent",
    "batchEmbedContents": "embedContent",
}
TEXT_METHODS = ("generateContent", "countTokens", "createCachedContent", "batchGenerateContent")
EMBEDDING_METHODS = ("embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent")
#: Families Google has shut down (2.5 on 2026-10-16): none is in the catalogue.
RETIRED_PREFIXES = ("gemini-2.5-", "gemini-2.0-", "gemini-1.5-")
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
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
PROSE = (
    "The tide came in slowly over the black rocks, and the keeper watched it. Gulls "
    "wheeled above the lamp room, crying, while the light turned and turned across the "
    "dark water."
)
OUTLINE_TITLE = "The Door at Low Tide"
USAGE = {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18}
SUMMARY = "A keeper finds a door in the sea and opens it."
_PATH = re.compile(r"^/(?P<version>[^/]+)/models(?:/(?P<model>[^/:]+)(?::(?P<method>\w+))?)?$")


def model_info(
    name: str, display: str, methods: tuple[str, ...], *, text: bool = True
) -> dict[str, Any]:
    """A Model resource as models.get returns it."""
    info: dict[str, Any] = {
        "name": f"models/{name}",
        "baseModelId": name,
        "version": "001",
        "displayName": display,
        "description": f"{display} (fake)",
        "inputTokenLimit": 1_048_576 if text else 2048,
        "outputTokenLimit": 65_536 if text else 1,
        "supportedGenerationMethods": list(methods),
    }
    if text:
        info.update(temperature=1.0, maxTemperature=2.0, topP=0.95, topK=64, thinking=True)
    return info


CATALOGUE: dict[str, dict[str, Any]] = {
    info["baseModelId"]: info
    for info in (
        model_info("gemini-3.5-flash", "Gemini 3.5 Flash", TEXT_METHODS),
        model_info("gemini-3.5-flash-lite", "Gemini 3.5 Flash-Lite", TEXT_METHODS),
        model_info("gemini-3.6-flash", "Gemini 3.6 Flash", TEXT_METHODS),
        model_info("gemini-3.7-flash", "Gemini 3.7 Flash", TEXT_METHODS),
        model_info("gemini-3.8-flash", "Gemini 3.8 Flash", TEXT_METHODS),
        model_info("gemini-3.1-flash-lite", "Gemini 3.1 Flash-Lite", TEXT_METHODS),
        model_info("gemini-embedding-001", "Gemini Embedding 001", EMBEDDING_METHODS, text=False),
    )
}


@dataclass
class Reply:
    """One scripted behaviour for the next request to an endpoint."""

    status: int = 200
    body: Any = None  # the JSON answer (ignored when `chunks` is set)
    chunks: list[Any] | None = None  # a server-sent-event stream of these JSON objects
    cut_after: int | None = None  # close the connection after this many chunks
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering at all
    chunk_delay: float = 0.0  # seconds between stream chunks
    drop: bool = False  # close the connection without any answer


@dataclass
class Served:
    """What the fake served one model: its generate and embed calls answered with HTTP 200,
    by endpoint, and the tokens their usageMetadata reported (a stream's: its last chunk
    that had any, since each is its response's running total)."""

    calls: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    candidates_tokens: int = 0
    thoughts_tokens: int = 0

    def add(self, endpoint: str, usage: dict[str, int] | None) -> None:
        self.calls[endpoint] += 1
        usage = usage or {}
        self.prompt_tokens += usage.get("promptTokenCount", 0)
        self.candidates_tokens += usage.get("candidatesTokenCount", 0)
        self.thoughts_tokens += usage.get("thoughtsTokenCount", 0)


@dataclass(frozen=True)
class Recorded:
    """One request as received (the API key header is never kept)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    at: float
    client_port: int


def error_body(
    code: int, message: str | None = None, details: list[Any] | None = None
) -> dict[str, Any]:
    """Google's error JSON for an HTTP status."""
    status = STATUS_NAMES.get(code, "UNKNOWN")
    return {
        "error": {
            "code": code,
            "message": message or f"fake {status.lower()}",
            "status": status,
            "details": details or [],
        }
    }


def error_reply(
    code: int,
    message: str | None = None,
    *,
    retry_after: float | str | None = None,
    retry_delay: str | None = None,
) -> Reply:
    """An error answer; `retry_after` sets the header, `retry_delay` ("7s") a RetryInfo."""
    details = []
    if retry_delay is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return Reply(status=code, body=error_body(code, message, details), headers=headers)


def chunk(
    text: str, finish: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """One GenerateContentResponse: a candidate with `text`; `finish` only on a last chunk."""
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [{"text": text}]},
        "index": 0,
    }
    if finish:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": "fake-gemini"}
    if usage:
        body["usageMetadata"] = usage
    return body


def text_response(
    text: str, finish: str = "STOP", usage: dict[str, int] | None = USAGE
) -> dict[str, Any]:
    """A complete (non-streamed) answer."""
    return chunk(text, finish, usage)


def outline_reply(title: str, bullets: list[str]) -> Reply:
    return Reply(body=text_response(json.dumps({"title": title, "bullets": bullets})))


def stream_reply(
    texts: list[str],
    *,
    finish: str = "STOP",
    usage: dict[str, int] | None = USAGE,
    cut_after: int | None = None,
    chunk_delay: float = 0.0,
) -> Reply:
    """A stream of `texts`, the last chunk carrying the finish reason and usage."""
    chunks = [chunk(t) for t in texts[:-1]] + [chunk(texts[-1] if texts else "", finish, usage)]
    return Reply(chunks=chunks, cut_after=cut_after, chunk_delay=chunk_delay)


def refused_candidate(reason: str = "SAFETY") -> dict[str, Any]:
    """A candidate the model stopped for `reason`, with no text (HTTP 200)."""
    return {
        "candidates": [
            {"content": {"role": "model", "parts": []}, "finishReason": reason, "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5},
    }


def blocked_prompt(reason: str = "SAFETY") -> dict[str, Any]:
    """A prompt Gemini would not even look at (HTTP 200, no candidates)."""
    return {"promptFeedback": {"blockReason": reason}, "usageMetadata": {"promptTokenCount": 5}}


def section_prose(prose: str, prompt: str) -> str:
    """`prose` for a section: the first section's is `prose` itself; each later one ends
    with a sentence of its own, as a model's sections differ (a section repeating an
    earlier one's opening would be asked for again)."""
    match = re.search(r"[Ss]ection (\d+) of \d+", prompt)
    number = int(match.group(1)) if match else 1
    return prose if number <= 1 else f"{prose} The bell rang {number} times."


class FakeGemini(ScriptedServer):
    """`start()`, point the SDK at `base_url`, script with `queue()`, read `requests`.

    `outline` (a {"title", "bullets"} dict) and `prose` fix the default answers.
    """

    endpoints = ENDPOINTS
    path = ""
    thread_name = "fake-gemini"

    def __init__(self, key: str = VALID_KEY) -> None:
        super().__init__()
        self.key = key
        self.outline: dict[str, Any] | None = None
        self.prose = PROSE
        self.words_per_chunk = 4
        #: The usageMetadata of default answers (add "thoughtsTokenCount" for thinking).
        self.usage: dict[str, int] = dict(USAGE)
        #: Answers to the next chapter-memory requests (tests/fakememory.py answers
        #: the rest), whatever else is scripted for generateContent.
        self.memory_replies: list[Reply] = []
        #: Model name -> Model resource: what exists. Edit it, or `retire` a model.
        self.models: dict[str, dict[str, Any]] = {k: dict(v) for k, v in CATALOGUE.items()}
        self._served: dict[str, Served] = defaultdict(Served)

    def fail(self, endpoint: str, code: int, times: int = 1, **options: Any) -> None:
        """The next `times` requests to `endpoint` get HTTP `code` (see error_reply)."""
        self.queue(endpoint, *(error_reply(code, **options) for _ in range(times)))

    def calls(self, endpoint: str) -> list[Recorded]:
        return [r for r in self.requests if _endpoint(r.method, r.path) == endpoint]

    def reset(self) -> None:
        """Forget recorded requests, unused scripted replies and what was served."""
        with self._lock:
            self._requests.clear()
            self._script.clear()
            self._served.clear()

    def retire(self, model: str) -> None:
        """Shut `model` down: from now on every request for it gets 404 NOT_FOUND."""
        with self._lock:
            self.models.pop(model, None)

    def served(self, model: str) -> Served:
        """A copy of what was served for `model` so far."""
        with self._lock:
            done = self._served[model]
            return Served(Counter(done.calls), *_tokens(done))

    def _count(self, model: str, endpoint: str, usage: dict[str, int] | None) -> None:
        with self._lock:
            self._served[model].add(endpoint, usage)

    def _model(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self.models.get(name)


def _tokens(served: Served) -> tuple[int, int, int]:
    return served.prompt_tokens, served.candidates_tokens, served.thoughts_tokens


def _endpoint(method: str, path: str) -> str:
    match = _PATH.match(path)
    if match is None:
        return ""
    if method == "GET" and not match["method"]:
        return "get" if match["model"] else "list"
    return match["method"] or ""


def not_found(model: str, method: str, version: str = "v1beta") -> Reply:
    """Google's answer for a model that does not exist (or cannot do `method`)."""
    message = (
        f"models/{model} is not found for API version {version}, or is not supported for "
        f"{method}. Call ListModels to see the list of available models and their "
        "supported methods."
    )
    return Reply(status=404, body=error_body(404, message))


class _Handler(BaseHTTPRequestHandler):
    owner: FakeGemini
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: tests read `requests` instead

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
        recorded = Recorded(
            method, path, query, headers, body, time.monotonic(), self.client_address[1]
        )
        self.owner._record(recorded)
        key = self.headers.get("x-goog-api-key")
        endpoint = _endpoint(method, path)
        if key != self.owner.key:
            self._json(400, BAD_KEY_BODY) if key else self._json(403, error_body(403))
        elif endpoint not in ENDPOINTS:
            self._json(404, error_body(404, f"{path} is not found"))
        else:
            match = _PATH.match(path)
            assert match is not None
            model = match["model"] or ""
            reply = self._unavailable(endpoint, model, match["version"])
            reply = (
                reply or self.owner._next_reply(endpoint) or self._default(endpoint, model, body)
            )
            self._answer(reply, endpoint, model)

    def _unavailable(self, endpoint: str, model: str, version: str) -> Reply | None:
        """404 NOT_FOUND when `model` is not in the catalogue or lacks the method."""
        if endpoint == "list":
            return None
        info = self.owner._model(model)
        needs = NEEDS_METHOD.get(endpoint)
        if info is None or (needs and needs not in info["supportedGenerationMethods"]):
            return not_found(model, needs or "get", version)
        return None

    def _answer(self, reply: Reply, endpoint: str, model: str) -> None:
        try:
            usage = self._reply(reply)
        except ConnectionError:  # the client went away (timed out, or stopped reading)
            self.close_connection = True
            return
        if reply.status == 200 and not reply.drop and endpoint not in ("get", "list"):
            self.owner._count(model, endpoint, usage)

    def _reply(self, reply: Reply) -> dict[str, int] | None:
        """Send `reply`; the usageMetadata it reported, if any."""
        time.sleep(reply.delay)
        if reply.drop:
            self._drop()
            return None
        if reply.chunks is not None and reply.status == 200:
            sent = self._stream(reply)
            usages = [
                c["usageMetadata"] for c in sent if isinstance(c, dict) and "usageMetadata" in c
            ]
            return usages[-1] if usages else None  # each is its response's running total
        self._json(reply.status, reply.body, reply.headers)
        return reply.body.get("usageMetadata") if isinstance(reply.body, dict) else None

    def _default(self, endpoint: str, model: str, body: Any) -> Reply:
        usage = self.owner.usage
        if endpoint == "list":
            with self.owner._lock:
                return Reply(body={"models": list(self.owner.models.values())})
        if endpoint == "get":
            return Reply(body=self.owner._model(model))
        if endpoint == "batchEmbedContents":
            return Reply(body={"embeddings": [_embedding(r) for r in body["requests"]]})
        if endpoint == "embedContent":
            return Reply(body={"embedding": _embedding(body)})
        if endpoint == "streamGenerateContent":
            words = section_prose(self.owner.prose, json.dumps(body)).split(" ")
            step = self.owner.words_per_chunk
            pieces = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
            return stream_reply([p + " " for p in pieces[:-1]] + pieces[-1:], usage=usage)
        config = (body or {}).get("generationConfig", {})
        user = _user_text(body)
        if config.get("responseMimeType") == "application/json" and is_memory(user):
            with self.owner._lock:
                scripted = self.owner.memory_replies.pop(0) if self.owner.memory_replies else None
            answer = text_response(json.dumps(memory_answer(user, SUMMARY)), usage=usage)
            return scripted or Reply(body=answer)
        if config.get("responseMimeType") == "application/json":
            outline = self.owner.outline or _outline(body)
            return Reply(body=text_response(json.dumps(outline), usage=usage))
        return Reply(body=text_response(SUMMARY, usage=usage))

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=UTF-8")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, reply: Reply) -> list[Any]:
        """Send `reply`'s chunks as server-sent events; the chunks actually sent."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        sent: list[Any] = []
        for event in reply.chunks or []:
            if reply.cut_after is not None and len(sent) >= reply.cut_after:
                self._drop()  # mid-stream, without the terminating chunk
                return sent
            self._send_chunk(f"data: {json.dumps(event)}\r\n\r\n".encode())
            sent.append(event)
            time.sleep(reply.chunk_delay)
        self._send_chunk(b"")
        return sent

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)


FakeGemini.handler = _Handler


def _user_text(body: Any) -> str:
    try:
        return str(body["contents"][-1]["parts"][0]["text"])
    except (KeyError, IndexError, TypeError):
        return ""


def _embedding(request: dict[str, Any]) -> dict[str, Any]:
    """A deterministic vector for the request's content, of its outputDimensionality."""
    size = int(request.get("outputDimensionality") or 3072)
    seed = hashlib.sha256(json.dumps(request.get("content"), sort_keys=True).encode()).digest()
    return {"values": [(seed[i % len(seed)] + i % 7 + 1) / 263.0 for i in range(size)]}


def _outline(body: dict[str, Any]) -> dict[str, Any]:
    """The default outline, with as many bullets as the request asks for."""
    count = _bullet_count(body)
    return {
        "title": OUTLINE_TITLE,
        "bullets": [f"Beat {i + 1} of the chapter." for i in range(count)],
    }


def _bullet_count(body: dict[str, Any]) -> int:
    # The schema says it exactly (minItems); else the prompt's wording; else 4.
    config = body.get("generationConfig", {})
    schema = config.get("responseSchema") or config.get("responseJsonSchema") or {}
    bullets = schema.get("properties", {}).get("bullets", {})
    for key in ("minItems", "min_items"):
        if bullets.get(key) is not None:
            return int(bullets[key])
    match = re.search(r"exactly (\d+)", json.dumps(body.get("contents")))
    return int(match.group(1)) if match else 4


def main(argv: list[str]) -> None:
    """Serve until interrupted, for trying a worker against it by hand."""
    fake = FakeGemini().start(int(argv[0]) if argv else 0)
    print(f"fake Gemini at {fake.base_url} (api key {VALID_KEY!r}); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
