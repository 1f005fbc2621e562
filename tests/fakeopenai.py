"""A small, real HTTP server that speaks the OpenAI chat-completions API, on 127.0.0.1.

Point the real `openai` SDK at it (OpenAIConfig.base_url, or OPENAI_BASE_URL for a
worker process). By default it answers like a current OpenAI-compatible server:
structured output (`response_format` json_schema: the schema's exact bullet count) and
JSON mode, prose streamed as server-sent events with a final usage chunk when
`stream_options.include_usage` asks for it, embeddings as floats or base64 as asked,
and GET /models and /models/{id}. A wrong key gets OpenAI's 401 body; a model it does
not serve, OpenAI's 404 `model_not_found`. Switches make it behave like older or
smaller servers (`json_schema=False`: an error for json_schema, `format_status` 400,
or 500 in llama-cpp-python's words; `json_object_schema=False`: an error for JSON mode
with a schema too; `floats_only`: embeddings always as JSON floats; `per_token`: one
embedding per token, as a model without pooling answers; `retrieve=False`: no GET
/models/{id}). Tests script what an endpoint does next (errors with Retry-After,
refusals, cut streams, streams of keep-alives) and read back the requests it received
(with when), what it served each model, and when a client hung up on a stream of
keep-alives. Standard library only:

    with FakeOpenAI() as fake:
        fake.queue("stream", error_reply(429, retry_after=1))
        ...  # the SDK with base_url=fake.base_url, api_key=VALID_KEY
        assert len(fake.calls("stream")) == 2
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakegemini import section_prose
from tests.fakememory import is_memory, memory_answer
from tests.fakeserver import ScriptedServer

VALID_KEY = "sk-test-openai-key-0123456789"
MODEL = "gpt-test-1"
EMBEDDING_MODEL = "text-embedding-test"
EMBEDDING_SIZE = 16
#: "chat" is a non-streamed chat completion, "stream" a streamed one.
ENDPOINTS = ("chat", "stream", "embeddings", "models", "model")
PROSE = (
    "The lamp swung in the wind, and the ferryman counted the lights on the far shore. "
    "Somewhere behind him a bell rang twice, and the black water answered it softly."
)
OUTLINE_TITLE = "The Ferry at Night"
SUMMARY = "A ferryman crosses at night and finds the far shore changed."
USAGE = {"prompt_tokens": 13, "completion_tokens": 9, "total_tokens": 22}
KEEPALIVE_SECONDS = 0.2
#: llama-cpp-python 0.3's answer to a json_schema response format: its request
#: validation error as an HTTP 500.
LLAMA_CPP_FORMAT_ERROR = (
    "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
    "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
    "'ctx': {'expected': \"'text' or 'json_object'\"}}]"
)
_BULLETS = re.compile(r"exactly (\d+) strings")
_PATHS = {
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/embeddings"): "embeddings",
    ("GET", "/v1/models"): "models",
}


@dataclass
class Reply:
    """One scripted behaviour for the next request to an endpoint."""

    status: int = 200
    body: Any = None  # the JSON answer (ignored when `chunks` is set)
    chunks: list[Any] | None = None  # a server-sent-event stream of these JSON objects
    cut_after: int | None = None  # close the connection after this many chunks
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: Seconds between two chunks of a stream (a model's pace).
    chunk_delay: float = 0.0
    #: Seconds of SSE keep-alive comments (every KEEPALIVE_SECONDS) sent after
    #: `stall_after` chunks (before the first, by default).
    stall: float = 0.0
    stall_after: int = 0


@dataclass
class Served:
    """What the fake served one model with HTTP 200: requests and reported tokens."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Recorded:
    """One request as received (the Authorization header is never kept)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    #: When it arrived (time.monotonic()).
    at: float = 0.0


def error_body(code: int, message: str, kind: str, error_code: str | None) -> dict[str, Any]:
    """OpenAI's error JSON."""
    return {"error": {"message": message, "type": kind, "param": None, "code": error_code}}


def error_reply(
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    retry_after: float | str | None = None,
) -> Reply:
    """An error answer in OpenAI's shape; `retry_after` sets the Retry-After header."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "requests"
    body = error_body(status, message or f"fake error {status}", kind, code)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return Reply(status=status, body=body, headers=headers)


def completion(content: str | None, *, refusal: str | None = None, finish: str = "stop") -> dict:
    """A non-streamed chat completion with one choice."""
    message = {"role": "assistant", "content": content, "refusal": refusal}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": dict(USAGE),
    }


def delta_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """One chat.completion.chunk with a choice carrying `delta`."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_764_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def usage_chunk() -> dict[str, Any]:
    """The last chunk when include_usage was asked for: usage, no choices."""
    return {**delta_chunk({}), "choices": [], "usage": dict(USAGE)}


def stream_reply(texts: list[str], *, finish: str | None = "stop", usage: bool = True) -> Reply:
    """A stream of `texts` as content deltas, then the finish reason and the usage."""
    chunks = [delta_chunk({"role": "assistant", "content": ""})]
    chunks += [delta_chunk({"content": text}) for text in texts]
    if finish is not None:
        chunks.append(delta_chunk({}, finish))
    if usage:
        chunks.append(usage_chunk())
    return Reply(chunks=chunks)


def refusal_reply() -> Reply:
    """A non-streamed answer whose message is a refusal (structured-output refusals)."""
    return Reply(body=completion(None, refusal="I'm sorry, I can't help with that."))


def refusal_stream() -> Reply:
    """A stream whose deltas carry a refusal instead of content."""
    chunks = [
        delta_chunk({"role": "assistant", "content": None, "refusal": ""}),
        delta_chunk({"refusal": "I'm sorry, I can't write that."}),
        delta_chunk({}, "stop"),
        usage_chunk(),
    ]
    return Reply(chunks=chunks)


def content_filter_stream(texts: tuple[str, ...] = ()) -> Reply:
    """A stream stopped by the content filter (after `texts`, if any)."""
    return stream_reply(list(texts), finish="content_filter")


class FakeOpenAI(ScriptedServer):
    """`start()`, point the SDK at `base_url`, script with `queue()`, read `requests`."""

    endpoints = ENDPOINTS
    path = "/v1"
    thread_name = "fake-openai"

    def __init__(self, key: str = VALID_KEY) -> None:
        super().__init__()
        self.key = key
        self.models: set[str] = {MODEL, EMBEDDING_MODEL}
        self.json_schema = True
        self.format_status = 400
        self.json_object_schema = True
        self.floats_only = False
        self.per_token = False
        self.embedding_size = EMBEDDING_SIZE
        self.retrieve = True
        #: When (time.monotonic()) a client hung up on a stream of keep-alives.
        self.hangups: list[float] = []
        self.prose = PROSE
        self.words_per_chunk = 4
        #: Answers to the next chapter-memory requests (tests/fakememory.py answers
        #: the rest), whatever else is scripted for chat.
        self.memory_replies: list[Reply] = []
        self._served: dict[str, Served] = defaultdict(Served)

    def calls(self, endpoint: str) -> list[Recorded]:
        return [r for r in self.requests if _endpoint(r.method, r.path, r.body) == endpoint]

    def served(self, model: str) -> Served:
        with self._lock:
            done = self._served[model]
            return Served(done.calls, done.prompt_tokens, done.completion_tokens)

    def _count(self, model: str, usage: dict[str, int] | None) -> None:
        with self._lock:
            served = self._served[model]
            served.calls += 1
            served.prompt_tokens += (usage or {}).get("prompt_tokens", 0)
            served.completion_tokens += (usage or {}).get("completion_tokens", 0)


def _endpoint(method: str, path: str, body: Any) -> str:
    if (method, path) in _PATHS:
        name = _PATHS[(method, path)]
        streamed = name == "chat" and isinstance(body, dict) and body.get("stream")
        return "stream" if streamed else name
    return "model" if method == "GET" and path.startswith("/v1/models/") else ""


def not_found(model: str) -> Reply:
    message = f"The model `{model}` does not exist or you do not have access to it."
    return Reply(404, error_body(404, message, "invalid_request_error", "model_not_found"))


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        path = self.path.partition("?")[0]
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        with self.owner._lock:
            self.owner._requests.append(Recorded(method, path, headers, body, time.monotonic()))
        endpoint = _endpoint(method, path, body)
        given = (self.headers.get("authorization") or "").removeprefix("Bearer ")
        if given != self.owner.key:
            # Worse than OpenAI, which masks it: the whole key echoed back.
            message = f"Incorrect API key provided: {given}."
            reply = Reply(401, error_body(401, message, "invalid_request_error", "invalid_api_key"))
        elif not endpoint or (endpoint == "model" and not self.owner.retrieve):
            reply = Reply(404, {"error": {"message": f"{path} not found", "type": "not_found"}})
        else:
            reply = self._unavailable(endpoint, path, body) or self.owner._next_reply(endpoint)
            reply = reply or self._default(endpoint, path, body)
        self._answer(reply, endpoint, (body or {}).get("model", ""))

    def _unavailable(self, endpoint: str, path: str, body: Any) -> Reply | None:
        model = path.removeprefix("/v1/models/") if endpoint == "model" else None
        model = model or (body or {}).get("model")
        if endpoint != "models" and model not in self.owner.models:
            return not_found(str(model))
        fmt = (body or {}).get("response_format") or {}
        if endpoint == "chat" and fmt.get("type") == "json_schema" and not self.owner.json_schema:
            if self.owner.format_status >= 500:
                status = self.owner.format_status
                return Reply(
                    status,
                    error_body(status, LLAMA_CPP_FORMAT_ERROR, "internal_server_error", None),
                )
            message = "response_format type 'json_schema' is not supported by this server"
            return Reply(400, error_body(400, message, "invalid_request_error", None))
        if endpoint == "chat" and "schema" in fmt and not self.owner.json_object_schema:
            message = "response_format: unknown field 'schema'"
            return Reply(400, error_body(400, message, "invalid_request_error", None))
        return None

    def _default(self, endpoint: str, path: str, body: Any) -> Reply:
        if endpoint == "models":
            return Reply(body={"object": "list", "data": [_model(m) for m in self.owner.models]})
        if endpoint == "model":
            return Reply(body=_model(path.removeprefix("/v1/models/")))
        if endpoint == "embeddings":
            return Reply(body=self._embeddings(body))
        if body.get("stream"):
            words = section_prose(self.owner.prose, json.dumps(body)).split(" ")
            step = self.owner.words_per_chunk
            pieces = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return stream_reply([p + " " for p in pieces[:-1]] + pieces[-1:], usage=usage)
        fmt = body.get("response_format") or {}
        user = str(body["messages"][-1]["content"])
        if is_memory(user):
            with self.owner._lock:
                scripted = self.owner.memory_replies.pop(0) if self.owner.memory_replies else None
            return scripted or Reply(body=completion(json.dumps(memory_answer(user, SUMMARY))))
        if fmt.get("type") == "json_schema":
            count = fmt["json_schema"]["schema"]["properties"]["bullets"]["maxItems"]
            return Reply(body=completion(json.dumps(_outline(count))))
        if fmt.get("type") == "json_object":
            match = _BULLETS.search(body["messages"][-1]["content"])
            return Reply(body=completion(json.dumps(_outline(int(match.group(1))))))
        return Reply(body=completion(SUMMARY))

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        """One embedding per input (a string, or a list of them), seeded by its text."""
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": self._embedding(text, body)}
            for i, text in enumerate(inputs)
        ]
        return {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": 7, "total_tokens": 7},
        }

    def _embedding(self, text: Any, body: dict[str, Any]) -> Any:
        seed = hashlib.sha256(json.dumps(text).encode()).digest()
        values = [(seed[i % len(seed)] + 1) / 257.0 for i in range(self.owner.embedding_size)]
        if self.owner.per_token:  # one vector per token, as floats whatever was asked
            return [values, list(reversed(values)), values]
        if body.get("encoding_format") == "base64" and not self.owner.floats_only:
            return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        return values

    def _answer(self, reply: Reply, endpoint: str, model: str) -> None:
        time.sleep(reply.delay)
        try:
            if reply.chunks is not None and reply.status == 200:
                sent = self._stream(reply)
                usages = [c["usage"] for c in sent if isinstance(c, dict) and c.get("usage")]
                usage = usages[-1] if usages else None
            else:
                self._json(reply.status, reply.body, reply.headers)
                usage = reply.body.get("usage") if isinstance(reply.body, dict) else None
        except ConnectionError:
            self.close_connection = True
            return
        if reply.status == 200 and endpoint in ("chat", "stream", "embeddings"):
            self.owner._count(model, usage)

    def _json(self, status: int, body: Any, headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, reply: Reply) -> list[Any]:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        sent: list[Any] = []
        for event in reply.chunks or []:
            if len(sent) == reply.stall_after:
                self._keep_alive(reply.stall)
            if sent and reply.chunk_delay:
                time.sleep(reply.chunk_delay)
            if reply.cut_after is not None and len(sent) >= reply.cut_after:
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return sent
            self._send_chunk(f"data: {json.dumps(event)}\n\n".encode())
            sent.append(event)
        self._send_chunk(b"data: [DONE]\n\n")
        self._send_chunk(b"")
        return sent

    def _keep_alive(self, seconds: float) -> None:
        """SSE comments only, as a busy server sends while it has nothing to say."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            try:
                self._send_chunk(b": keep-alive\n\n")
            except ConnectionError:
                with self.owner._lock:
                    self.owner.hangups.append(time.monotonic())
                raise
            time.sleep(KEEPALIVE_SECONDS)

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


FakeOpenAI.handler = _Handler


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1_764_000_000, "owned_by": "fake"}


def _outline(count: int) -> dict[str, Any]:
    return {
        "title": OUTLINE_TITLE,
        "bullets": [f"The ferry crosses, part {i + 1}." for i in range(count)],
    }
