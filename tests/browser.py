"""The dashboard as a person uses it: `storyworker dashboard` as a real process
(gunicorn), and a real headless Chromium from the OS packages driven by Selenium and
chromedriver. Screenshots go to tests/artifacts/ (ignored by git), or to
$STORYWORKER_ARTIFACTS."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.service import free_port, wait_for
from tests.terminal import ROOT, cli_env

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
#: A headless Chromium that, as root on a closed network, asks nothing of Google.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)


def artifacts() -> Path:
    folder = Path(os.environ.get("STORYWORKER_ARTIFACTS") or ROOT / "tests" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not any(Path(p).exists() for p in CHROMIUM):
        return "Chromium is not installed (apt-get install chromium)"
    if not any(Path(p).exists() for p in CHROMEDRIVER):
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


def start_browser(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(p for p in CHROMIUM if Path(p).exists())
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver_path = next(p for p in CHROMEDRIVER if Path(p).exists())
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    return driver


class Dashboard:
    """One `storyworker dashboard` process on a port of its own."""

    def __init__(self, database_url: str, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.env = cli_env({"DATABASE_URL": database_url, "DASHBOARD_PORT": str(self.port), **env})
        self.log_path = log_dir / f"dashboard-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Dashboard:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "supervisor", "dashboard"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_path.parent,
            )
        wait_for(self.answers, 30, f"the dashboard on {self.url}", interval=0.1)
        return self

    def answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the dashboard exited ({self.proc.returncode}): {self.logs()}")
        try:
            with urllib.request.urlopen(f"{self.url}/login", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def fresh_profile() -> Path:
    return Path(tempfile.mkdtemp(prefix="storyworker-chromium-"))


def remove_profile(profile: Path) -> None:
    shutil.rmtree(profile, ignore_errors=True)
