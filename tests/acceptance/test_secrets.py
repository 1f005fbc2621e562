"""No secret in any output, whatever the operator pastes (issue 27).

Every form of DSN and API key in FORMS, malformed or well-formed, goes through every
command that could print one (`run`, `migrate`, `status`, `demo --database-url`,
`jobs`, `watch`) as a real process: each exits with the form's documented code in one
line, and no secret (nor any piece of one) is in its stdout or stderr, nor mangled
into what is shown. The forms fail fast (a malformed DSN is refused before anything
connects; a well-formed one points at a closed port). Two slow tests run a real
service with a password in each DSN form and read its log, /health, /ready,
/metrics, `status --json`, `jobs` and `watch`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.terminal import cli_env

pytestmark = pytest.mark.slow

#: Every command runs with every key variable set: none of them may ever show.
KEYS = {
    "GOOGLE_GENERATIVE_AI_API_KEY": "AIzaSyS3cr3tKeyOfGoogleGenAI0001",
    "GEMINI_API_KEY": "gemini-S3cr3t-key-0002",
    "GOOGLE_API_KEY": "AIzaSyS3cr3tKeyOfGoogle00000003",
    "OPENAI_API_KEY": "sk-proj-S3cr3tKeyOfOpenAI0004",
}
UNREACHABLE = "postgresql://app@127.0.0.1:1/app?connect_timeout=2"
#: Masking in the middle of a word: a secret's text replaced where it was not one.
MANGLED = re.compile(r"\*\*\*[\w.]|[\w.]\*\*\*")
CONFIG, UNAVAILABLE = 78, 69


@dataclass(frozen=True)
class Form:
    name: str
    env: dict[str, str]
    #: Never printed, nor any of these pieces.
    secrets: tuple[str, ...]
    #: What every command exits with.
    code: int
    #: Printed on stderr as written (the host): masking took no more than the secret.
    shown: tuple[str, ...] = ()
    #: `demo --database-url` gets this DSN (else an unreachable one, with `env`).
    demo_dsn: str = field(default=UNREACHABLE)


def dsn(name: str, value: str, *secrets: str, code: int, shown: tuple[str, ...] = ()) -> Form:
    return Form(name, {"DATABASE_URL": value}, secrets, code, shown, demo_dsn=value)


def pasted(name: str, env: dict[str, str], *secrets: str, code: int) -> Form:
    return Form(name, {"DATABASE_URL": UNREACHABLE, **env}, secrets, code)


HOST = ("127.0.0.1",)
FORMS = [
    dsn("no-://", "postgresql//app:S3cr3t-a@127.0.0.1:1/app", "S3cr3t-a", code=CONFIG,
        shown=HOST),
    dsn("raw-@", "postgresql://app:Tr0ub@dor-S3cr3t@127.0.0.1:1/app", "Tr0ub", "dor-S3cr3t",
        code=CONFIG, shown=HOST),
    dsn("raw-@-short", "postgresql://app:p@ss-S3cr3t@127.0.0.1:1/app", "ss-S3cr3t",
        code=CONFIG, shown=("postgresql://***@127.0.0.1",)),
    dsn("raw-/", "postgresql://app:pa/ss-S3cr3t@127.0.0.1:1/app", "pa/ss", "ss-S3cr3t",
        code=CONFIG, shown=HOST),
    dsn("raw-:", "postgresql://app:pa:ss-S3cr3t@127.0.0.1:1/app?connect_timeout=2",
        "pa:ss", "ss-S3cr3t", code=UNAVAILABLE, shown=("app:***@127.0.0.1:1",)),
    dsn("raw-space", "postgresql://app:S3 cr3t@127.0.0.1:1/app", "S3 cr3t", "cr3t@",
        code=CONFIG, shown=HOST),
    dsn("percent-encoded", "postgresql://app:p%40ss%2F%3AS3cr3t@127.0.0.1:1/app",
        "p%40ss", "S3cr3t", "p@ss/:", code=UNAVAILABLE, shown=HOST),
    dsn("query-password", "postgresql://app@127.0.0.1:1/app?password=S3cr3t-q&connect_timeout=2",
        "S3cr3t-q", code=UNAVAILABLE, shown=("connect_timeout=2",)),
    dsn("query-sslpassword", "postgresql://app:S3cr3t-u@127.0.0.1:1/app?sslpassword=S3cr3t-ssl",
        "S3cr3t-u", "S3cr3t-ssl", code=UNAVAILABLE, shown=HOST),
    dsn("kv", "host=127.0.0.1 port=1 user=app password=S3cr3t-kv", "S3cr3t-kv",
        code=UNAVAILABLE, shown=("host=127.0.0.1",)),
    dsn("kv-spaced", "host=127.0.0.1 port=1 user=app password = S3cr3t-sp", "S3cr3t-sp",
        code=UNAVAILABLE, shown=HOST),
    dsn("kv-quoted", "host=127.0.0.1 port=1 password='S3cr3t two words'", "S3cr3t",
        "two words", code=UNAVAILABLE, shown=HOST),
    dsn("kv-escaped-quote", "host=127.0.0.1 port=1 password='it\\'s S3cr3t'", "S3cr3t",
        "it\\'s", code=UNAVAILABLE, shown=HOST),
    dsn("kv-unterminated", "host=127.0.0.1 port=1 password='S3cr3t-open", "S3cr3t-open",
        code=CONFIG, shown=HOST),
    dsn("kv-no-=", "host=127.0.0.1 port=1 password S3cr3t-noeq", "S3cr3t-noeq", code=CONFIG,
        shown=HOST),
    dsn("kv-misspelt-key", "host=127.0.0.1 passwrod=S3cr3t-typo", "S3cr3t-typo", code=CONFIG),
    dsn("password-in-host", "postgresql://app:127.0.0@127.0.0.1:1/app", "app:127.0.0@",
        "127.0.0@", code=UNAVAILABLE, shown=HOST),
    dsn("empty-password", "postgresql://app:@127.0.0.1:1/app", code=UNAVAILABLE,
        shown=("postgresql://app:@127.0.0.1:1/app",)),
    dsn("ipv6", "postgresql://app:S3cr3t-v6@[::1]:1/app", "S3cr3t-v6", code=UNAVAILABLE,
        shown=("[::1]:1",)),
    dsn("port-not-a-number", "postgresql://app:S3cr3t-port@127.0.0.1:abc/app", "S3cr3t-port",
        code=CONFIG, shown=HOST),
    dsn("host-forgotten", "postgresql://app:S3cr3t-nohost/app", "S3cr3t-nohost", code=CONFIG),
    dsn("multi-host", "postgresql://app:S3cr3t-mh@127.0.0.1:1,127.0.0.2:1/app", "S3cr3t-mh",
        code=UNAVAILABLE, shown=("127.0.0.1:1,127.0.0.2:1",)),
    dsn("other-scheme", "mysql://app:S3cr3t-my@127.0.0.1/db", "S3cr3t-my", code=CONFIG,
        shown=HOST),
    dsn("only-the-password", "S3cr3t-alone", "S3cr3t-alone", code=CONFIG),
    dsn("blanks-around", "  postgresql://app:S3cr3t-ws@127.0.0.1:1/app  ", "S3cr3t-ws",
        code=UNAVAILABLE, shown=HOST),
    pasted("listen-raw-@", {"DATABASE_LISTEN_URL": "postgresql://app:L1@S3cr3t@127.0.0.1:1/a"},
           "L1@S3cr3t", "S3cr3t", code=CONFIG),
    pasted("listen-no-://", {"DATABASE_LISTEN_URL": "postgresql//app:S3cr3t-l@127.0.0.1:1/a"},
           "S3cr3t-l", code=CONFIG),
    pasted("listen-kv-quoted", {"DATABASE_LISTEN_URL": "host=127.0.0.1 password='S3cr3t l'"},
           "S3cr3t l", code=UNAVAILABLE),
    *[
        pasted(f"{variable}-as-provider", {"GENERATION_PROVIDER": key}, key, code=CONFIG)
        for variable, key in KEYS.items()
    ],
    pasted("key-as-log-level", {"LOG_LEVEL": KEYS["OPENAI_API_KEY"]}, "S3cr3t", code=CONFIG),
]  # fmt: skip


def commands(form: Form) -> list[tuple[tuple[str, ...], dict[str, str]]]:
    """(arguments, environment) of each command the form goes through."""
    # DATABASE_WAIT_SECONDS=0: `run` says at once what a database it cannot reach is
    # (waiting for one is test_database_outage's); what it prints is the point here.
    env = {"GENERATION_PROVIDER": "offline", "DATABASE_WAIT_SECONDS": "0", **KEYS, **form.env}
    demo_env = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    return [
        (("run",), env),
        (("migrate",), env),
        (("status", "--json"), env),
        (("jobs", "list"), env),
        (("watch", str(uuid.uuid4())), env),
        (("demo", "--database-url", form.demo_dsn), demo_env),
    ]


def storyworker(args: tuple[str, ...], env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def secrets_of(form: Form) -> tuple[str, ...]:
    return (*form.secrets, *KEYS.values())


def assert_no_secret(text: str, secrets: tuple[str, ...], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} in {where}: {text}"
    assert not MANGLED.search(text), f"mangled {where}: {text}"


def test_the_table_is_wide_enough():
    assert len(FORMS) >= 20 and len({f.name for f in FORMS}) == len(FORMS)


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.name)
def test_no_command_prints_a_secret_of_any_form(form, tmp_path):
    runs = commands(form)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda run: storyworker(*run, cwd=tmp_path), runs))
    for (args, _), result in zip(runs, results, strict=True):
        where = f"`storyworker {' '.join(args[:2])}`"
        assert result.returncode == form.code, f"{where}: {result.stderr}"
        assert_no_secret(result.stdout + result.stderr, secrets_of(form), where)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("storyworker: error: "), result.stderr
        for shown in form.shown:
            assert shown in lines[0], f"{where} hides {shown!r}: {lines[0]}"


# --- a running service ---------------------------------------------------------------

LISTEN = "postgresql://app:L1sten-S3cr3t@127.0.0.1:1/app?connect_timeout=1"


def url_form(database_url: str) -> tuple[str, str]:
    """The test database as a URL whose password holds @, / and : (percent-encoded);
    the server trusts local connections, so any password connects."""
    parts = conninfo_to_dict(database_url)
    password = "p%40ss%2FS3cr3t%3Aurl"
    host = quote(str(parts["host"]), safe="")
    url = f"postgresql://{parts['user']}:{password}@/{parts['dbname']}?host={host}"
    return url, password


def kv_form(database_url: str) -> tuple[str, str]:
    password = "S3cr3t it's 'quoted'"
    return make_conninfo(database_url, password=password), "S3cr3t"


@pytest.mark.parametrize("make", [url_form, kv_form], ids=["url", "key=value"])
def test_a_running_service_shows_no_secret_anywhere(make, service, job_factory, database_url):
    form, password = make(database_url)
    env = {"DATABASE_URL": form, "DATABASE_LISTEN_URL": LISTEN, **KEYS}
    svc = service(**env).start()
    job = job_factory()
    outputs = {}
    watched = storyworker(("watch", str(job["id"])), env, svc.log_path.parent)
    assert watched.returncode == 0, watched.stderr
    for args in (("jobs", "list"), ("jobs", "show", str(job["id"])), ("status", "--json")):
        result = storyworker(args, env, svc.log_path.parent)
        assert result.returncode == 0, result.stderr
        outputs[" ".join(args)] = result.stdout + result.stderr
    for path in ("/health", "/ready", "/metrics"):
        outputs[path] = str(svc.get(path)[1])
    assert svc.stop() == 0
    outputs["log"] = svc.logs()
    outputs["watch"] = watched.stdout + watched.stderr
    assert "host listener" in outputs["log"]  # DATABASE_LISTEN_URL was used, and failed
    secrets = (password, "L1sten-S3cr3t", *KEYS.values())
    for where, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} in {where}: {text[-2000:]}"
