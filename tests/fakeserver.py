"""What the fake provider servers share: an HTTP server on 127.0.0.1 served from a
daemon thread, replies scripted per endpoint, and every request recorded."""

from __future__ import annotations

import functools
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


class ScriptedServer:
    """`start()`, point an SDK at `base_url`, script with `queue()`, read `requests`.

    Subclasses name their `endpoints`, their request `handler` (which reaches the
    server as `self.owner`) and the `path` their API lives under."""

    endpoints: ClassVar[tuple[str, ...]] = ()
    handler: ClassVar[type[BaseHTTPRequestHandler]]
    path: ClassVar[str] = ""
    thread_name: ClassVar[str] = "fake-server"

    def __init__(self) -> None:
        self._requests: list[Any] = []
        self._script: dict[str, deque[Any]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self, port: int = 0) -> Self:
        """Listen on 127.0.0.1 (a free port unless given), serving from a daemon thread."""
        handler = type("Handler", (self.handler,), {"owner": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        threading.Thread(target=serve, name=self.thread_name, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def queue(self, endpoint: str, *replies: Any) -> None:
        """Script the next replies of `endpoint` (one of `endpoints`), in order."""
        if endpoint not in self.endpoints:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {self.endpoints}")
        with self._lock:
            self._script[endpoint].extend(replies)

    @property
    def requests(self) -> list[Any]:
        with self._lock:
            return list(self._requests)

    def _record(self, request: Any) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_reply(self, endpoint: str) -> Any | None:
        with self._lock:
            script = self._script[endpoint]
            return script.popleft() if script else None
