"""sd_notify, spoken only when systemd asked for it (NOTIFY_SOCKET set).

The variables are taken out of the environment at start-up so that no child process
(worker, health server) ever talks to systemd in the supervisor's name.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None) -> None:
        self._address = address
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        self._last_watchdog = 0.0
        self._last_status = ""

    @classmethod
    def from_environment(cls) -> Notifier:
        """Read and remove NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID."""
        address = os.environ.pop("NOTIFY_SOCKET", None)
        usec = os.environ.pop("WATCHDOG_USEC", None)
        pid = os.environ.pop("WATCHDOG_PID", None)
        if pid is not None and pid != str(os.getpid()):
            usec = None  # the watchdog is meant for another process
        return cls(address, int(usec) if usec and usec.isdigit() else None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> None:
        if self._address is None:
            return
        address = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), address)
        except OSError as exc:
            log.warning("sd_notify failed", extra={"sw_fields": {"error": str(exc)}})

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.notify(f"STATUS={status}")

    def reloading(self) -> None:
        self.notify(
            f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self, now: float) -> None:
        """Pet the watchdog from the main loop, at half its interval."""
        if self.watchdog_interval and now - self._last_watchdog >= self.watchdog_interval:
            self._last_watchdog = now
            self.notify("WATCHDOG=1")
