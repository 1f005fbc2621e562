"""The CLI as a person sees it: in a pseudo-terminal of a given size, or in a real
terminal emulator (tmux, from the OS packages) whose screen the test reads back."""

from __future__ import annotations

import fcntl
import os
import pty
import shlex
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NO_COLOR")}
    env.update(extra or {})
    return env


def run_in_pty(
    *args: str, env: Mapping[str, str], columns: int = 100, timeout: float = 60
) -> tuple[int, str]:
    """Run `storyworker ARGS` with a terminal of `columns` as its stdout and stderr;
    (exit code, everything it wrote, escape sequences included)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={"TERM": "xterm-256color", **env},
        cwd=ROOT,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=10), b"".join(chunks).decode(errors="replace")


def have_tmux() -> bool:
    return shutil.which("tmux") is not None


@contextmanager
def tmux(
    command: list[str], env: Mapping[str, str], columns: int = 50, rows: int = 20
) -> Iterator[TmuxPane]:
    """`command` in a detached tmux session of its own (a private server socket), in a
    window of `columns` x `rows`; killed afterwards."""
    socket = f"storyworker-test-{os.getpid()}-{time.monotonic_ns()}"
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    done = Path(f"/tmp/{socket}.rc")
    shell = (
        # A trapped INT (not an ignored one) reaches the command as usual and lets the
        # shell go on to record the command's exit code.
        f"trap true INT; cd {shlex.quote(str(ROOT))} && env {exports} {shlex.join(command)};"
        f" echo $? > {done}; sleep 600"
    )
    subprocess.run(
        ["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-x", str(columns),
         "-y", str(rows), "sh", "-c", shell],
        check=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )  # fmt: skip
    try:
        yield TmuxPane(socket, done)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False, capture_output=True)
        done.unlink(missing_ok=True)


class TmuxPane:
    def __init__(self, socket: str, done: Path) -> None:
        self.socket = socket
        self.done = done

    def screen(self) -> list[str]:
        """The scrollback and the visible screen, one string a row (frames that piled
        up scroll into the history), trailing blank rows dropped."""
        out = subprocess.run(
            ["tmux", "-L", self.socket, "capture-pane", "-p", "-S", "-"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        lines = [line.rstrip() for line in out.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def exit_code(self) -> int | None:
        """The command's exit code once it ended, else None."""
        text = self.done.read_text().strip() if self.done.exists() else ""
        return int(text) if text else None

    def send_interrupt(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "send-keys", "C-c"], check=True)
