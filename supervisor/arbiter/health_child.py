"""The health server as the supervisor keeps it: spawned first, restarted with the
same backoff as a worker when it dies, probed at the address it actually bound, and
stopped last."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from supervisor.arbiter.procs import Processes
from supervisor.arbiter.slots import Slot
from supervisor.logs import fields

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 0.5
STOP_TIMEOUT_SECONDS = 10.0
#: Where a wildcard bind is reached from this host.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@dataclass
class HealthChild:
    main: Callable[[], NoReturn] | None
    #: Where the health server writes the address it bound ("HOST PORT").
    address_file: str | None = None
    slot: Slot = field(default_factory=lambda: Slot(-1))
    _announced: str = ""

    @property
    def pid(self) -> int | None:
        return self.slot.pid

    def due(self, now: float) -> bool:
        """Not running, and its backoff (if any) is over."""
        return self.main is not None and self.slot.due(now)

    def spawn(self, processes: Processes, forget_in_child: Callable[[], None], now: float) -> None:
        assert self.main is not None
        if self.address_file:
            Path(self.address_file).unlink(missing_ok=True)  # the next one says anew
        self.slot.restarts += bool(self.slot.started) and not self.slot.planned
        self.slot.spawned(processes.spawn(self.main, forget_in_child), now)
        log.info("health server spawned", extra=fields(pid=self.slot.pid))

    def ended(self, how: str, now: float) -> None:
        self.slot.ended(now)
        log.warning(
            "health server exited",
            extra=fields(how=how, restart_in_s=round(max(0.0, self.slot.not_before - now), 1)),
        )

    def address(self, host: str, port: int) -> tuple[str, int] | None:
        """Where to probe: the address the server says it bound, else the settings'
        (None until a server that announces its address has done so)."""
        if self.address_file is None:
            return _LOOPBACK.get(host, host), port
        try:
            bound_host, bound_port = Path(self.address_file).read_text("ascii").split()
        except (OSError, ValueError):
            return None
        if bound_port != self._announced:
            self._announced = bound_port
            log.info("health server listening", extra=fields(host=bound_host, port=bound_port))
        return _LOOPBACK.get(bound_host, bound_host), int(bound_port)

    def answers(self, host: str, port: int) -> bool:
        """/health answers (any status) at the bound address."""
        if self.main is None:
            return True
        where = self.address(host, port)
        if where is None:
            return False
        from health.client import HealthClientError, fetch_health

        netloc = f"[{where[0]}]:{where[1]}" if ":" in where[0] else f"{where[0]}:{where[1]}"
        try:
            fetch_health(f"http://{netloc}/health", timeout=PROBE_TIMEOUT_SECONDS)
        except HealthClientError:
            return False
        return True

    def replace(self, processes: Processes) -> None:
        """Ask the running server to go; it is started again (at once, not as a
        crash) with the settings of the moment."""
        if self.slot.pid is not None:
            self.slot.quitting = True
            processes.kill(self.slot.pid, signal.SIGTERM)

    def stop(self, processes: Processes) -> None:
        """TERM, wait for it (reaping), then KILL if it would not go."""
        pid = self.slot.pid
        if pid is None:
            return
        processes.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while self.slot.pid is not None and time.monotonic() < deadline:
            if any(ended.pid == pid for ended in processes.reap()):
                self.slot.pid = None
            time.sleep(0.05)
        if self.slot.pid is not None:
            processes.kill(pid, signal.SIGKILL)
