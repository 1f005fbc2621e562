"""The platform files (fly.toml, railway.json, .do/app.yaml, Procfile) say what the image
really does: each is parsed, and its command, port, health path, stop signal and stop
timeout are checked against the Dockerfile (and the health path against the code), so
none of them can drift from the image."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from health.app import HealthConfig, create_app
from health.heartbeat import HeartbeatTable
from supervisor.cli import main

ROOT = Path(__file__).resolve().parents[2]

#: What the image's health check asks for; checked against the app and the CLI below.
HEALTH_PATH = "/health"
#: Seconds the supervisor needs after SHUTDOWN_GRACE_SECONDS to release what is left,
#: stop the health server and exit; a platform's kill timeout must leave them.
MARGIN_SECONDS = 2


@dataclass(frozen=True)
class Image:
    """The final stage of the Dockerfile, as far as a platform needs to know it."""

    base: str
    command: list[str]
    port: int
    env: dict[str, str]
    stop_signal: str
    healthcheck: list[str]
    user: str

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)

    @property
    def grace_seconds(self) -> int:
        return int(self.env["SHUTDOWN_GRACE_SECONDS"])


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def read_image(path: Path = ROOT / "Dockerfile") -> Image:
    instructions = dockerfile_instructions(path.read_text())
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    final = instructions[last_from:]
    found: dict[str, str] = {}
    env: dict[str, str] = {}
    for keyword, args in final:
        if keyword == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
        else:
            assert keyword not in found or keyword in ("RUN", "COPY"), f"two {keyword}s"
            found[keyword] = args
    check = found["HEALTHCHECK"]
    assert " CMD [" in f" {check}", f"HEALTHCHECK must use the exec form: {check}"
    (port,) = found["EXPOSE"].split()
    return Image(
        base=found["FROM"].split()[0],
        command=exec_form(found["CMD"]),
        port=int(port.removesuffix("/tcp")),
        env=env,
        stop_signal=found["STOPSIGNAL"],
        healthcheck=exec_form(check[check.index("CMD [") + len("CMD") :]),
        user=found["USER"],
    )


@pytest.fixture(scope="module")
def image() -> Image:
    return read_image()


def seconds(value: int | str) -> int:
    """fly.toml durations: 15 or "15s" / "1m"."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"(\d+)(s|m)", value)
    assert match, f"not a duration: {value!r}"
    return int(match[1]) * (60 if match[2] == "m" else 1)


# --- the image -----------------------------------------------------------------------


def test_the_image_runs_storyworker_as_a_non_root_user(image):
    assert image.command == ["storyworker", "run"]
    assert image.user.split(":")[0] not in ("", "0", "root")
    assert image.stop_signal == "SIGTERM"
    assert image.env["PORT"] == str(image.port) == "3951"
    assert image.env["HEALTH_HOST"] == "0.0.0.0"


def test_the_grace_period_fits_inside_dockers_default_stop(image):
    # `docker stop` and most platforms wait 10 s between SIGTERM and SIGKILL.
    assert image.grace_seconds + MARGIN_SECONDS <= 10


def test_nothing_secret_is_baked_into_the_image(image):
    secret = re.compile(r"DATABASE_URL|API_KEY|PASSWORD|SECRET|TOKEN")
    assert not [name for name in image.env if secret.search(name)]
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") :].count("*") == 1, "the context is allow-listed"
    assert "**/.env" in ignored
    assert not any(line.startswith("!") and ".env" in line for line in ignored)


def test_the_health_check_asks_the_health_path_on_port(image, monkeypatch, tmp_path):
    """The HEALTHCHECK runs `storyworker health`: it must GET HEALTH_PATH on $PORT."""
    assert image.healthcheck[:2] == ["storyworker", "health"]
    asked: list[str] = []

    def fetch(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
        asked.append(url)
        return 200, {"status": "healthy"}

    monkeypatch.setattr("health.client.fetch_health", fetch)
    monkeypatch.chdir(tmp_path)  # no .env
    result = CliRunner().invoke(main, image.healthcheck[1:], env={"PORT": str(image.port)})
    assert result.exit_code == 0, result.output
    assert asked == [f"http://127.0.0.1:{image.port}{HEALTH_PATH}"]


def test_the_health_path_is_served_by_the_app(tmp_path):
    table = HeartbeatTable.create(1, directory=str(tmp_path))
    try:
        app = create_app(HealthConfig(table=table, worker_timeout_seconds=30))
        assert HEALTH_PATH in {rule.rule for rule in app.url_map.iter_rules()}
    finally:
        table.close()
        table.unlink()


# --- Fly.io --------------------------------------------------------------------------


def test_fly_toml(image):
    fly = tomllib.loads((ROOT / "fly.toml").read_text())
    assert fly["build"]["dockerfile"] == "Dockerfile"
    processes = {name: cmd for name, cmd in fly["processes"].items() if cmd == image.command_line}
    assert processes, f"no process runs {image.command_line!r}: {fly['processes']}"
    checks = [
        check
        for check in fly["checks"].values()
        if check["type"] == "http" and set(check.get("processes", processes)) & set(processes)
    ]
    assert checks, "no HTTP check on the process that runs storyworker"
    for check in checks:
        assert check["port"] == image.port
        assert check["path"] == HEALTH_PATH
    assert fly["kill_signal"] == image.stop_signal
    grace = int(fly.get("env", {}).get("SHUTDOWN_GRACE_SECONDS", image.grace_seconds))
    assert seconds(fly["kill_timeout"]) >= grace + MARGIN_SECONDS
    assert seconds(fly["kill_timeout"]) <= 300  # Fly's maximum
    assert fly.get("env", {}).get("PORT", str(image.port)) == str(image.port)
    assert fly["deploy"]["release_command"] == "storyworker migrate"


# --- Railway -------------------------------------------------------------------------


def test_railway_json(image):
    railway = json.loads((ROOT / "railway.json").read_text())
    assert railway["build"] == {"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile"}
    deploy = railway["deploy"]
    assert deploy["startCommand"] == image.command_line
    assert deploy["healthcheckPath"] == HEALTH_PATH
    assert deploy["restartPolicyType"] in ("ON_FAILURE", "ALWAYS", "NEVER")
    assert deploy["preDeployCommand"] == ["storyworker migrate"]
    # Railway rejects the whole file when a number is given as a string.
    for key in ("healthcheckTimeout", "restartPolicyMaxRetries", "drainingSeconds"):
        assert type(deploy[key]) is int, key
    # drainingSeconds is SIGTERM -> SIGKILL (Railway's default is 0). Its health check
    # goes to $PORT, which the health server listens on whatever Railway sets it to.
    assert deploy["drainingSeconds"] >= image.grace_seconds + MARGIN_SECONDS
    assert "PORT" in image.env


# --- DigitalOcean App Platform -------------------------------------------------------


def test_digitalocean_app_spec(image):
    spec = yaml.safe_load((ROOT / ".do" / "app.yaml").read_text())
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,30}[a-z0-9]", spec["name"])
    (worker,) = [w for w in spec["workers"] if w["run_command"] == image.command_line]
    assert worker["dockerfile_path"] == "Dockerfile"
    check = worker["liveness_health_check"]
    assert check["http_path"] == HEALTH_PATH
    assert check["port"] == image.port
    env = {e["key"]: e for e in spec.get("envs", []) + worker.get("envs", [])}
    grace = int(env.get("SHUTDOWN_GRACE_SECONDS", {}).get("value", image.grace_seconds))
    assert worker["termination"]["grace_period_seconds"] >= grace + MARGIN_SECONDS
    assert env.get("PORT", {}).get("value", str(image.port)) == str(image.port)
    for name in ("DATABASE_URL", "GOOGLE_GENERATIVE_AI_API_KEY"):
        assert env[name]["type"] == "SECRET" and "value" not in env[name], name
    (migrate,) = spec["jobs"]
    assert migrate["kind"] == "PRE_DEPLOY" and migrate["run_command"] == "storyworker migrate"


# --- Procfile (Heroku, Dokku, ...) ----------------------------------------------------


def test_procfile(image):
    entries = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert {name: cmd.strip() for name, cmd in entries.items()} == {"worker": image.command_line}
