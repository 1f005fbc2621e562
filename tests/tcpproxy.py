"""A TCP proxy in front of the test PostgreSQL that can lose one reply on purpose: the
server has committed, the client never hears back (a network blip, a pooler or a
server restart at the worst moment)."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class LossyProxy:
    """Forwards 127.0.0.1:port to the server of `dsn` (TCP or its Unix socket). Once
    armed with `drop_reply_containing(marker)`, the first server reply that contains
    `marker` is not forwarded: both sides of that connection are closed instead."""

    def __init__(self, dsn: str) -> None:
        self.target = conninfo_to_dict(dsn)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._marker: bytes | None = None
        self.dropped = 0
        self._lock = threading.Lock()
        self._stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def dsn(self, dsn: str) -> str:
        """`dsn` pointed at the proxy."""
        return make_conninfo(dsn, host="127.0.0.1", port=str(self.port), sslmode="disable")

    def drop_reply_containing(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker

    def close(self) -> None:
        self._stopping = True
        self._listener.close()

    def _connect_upstream(self) -> socket.socket:
        host, port = self.target.get("host") or "/tmp", int(self.target.get("port") or 5432)
        if host.startswith("/"):
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(os.path.join(host, f".s.PGSQL.{port}"))
            return upstream
        return socket.create_connection((host, port))

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._connect_upstream()
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in selector.select():
                    data = key.fileobj.recv(65536)
                    if not data or (key.fileobj is upstream and self._should_drop(data)):
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def _should_drop(self, data: bytes) -> bool:
        with self._lock:
            if self._marker is None or self._marker not in data:
                return False
            self._marker = None
            self.dropped += 1
            return True
