"""Redaction by structure (issue 27): every form of DSN libpq accepts, and the
malformed ones it would misread, shown without their secrets; the log formatters and
the one-line errors mask what they print."""

from __future__ import annotations

import json
import logging

import pytest

from supervisor import logs, redact
from supervisor.dsn import problem
from supervisor.redact import redact_dsn


@pytest.fixture(autouse=True)
def nothing_remembered(monkeypatch):
    """Each test starts with no DSN or key remembered: other tests in this process load
    settings (and so remember their secrets), which must not change what these see."""
    monkeypatch.setattr(redact, "_known_dsns", set())
    monkeypatch.setattr(redact, "_known_keys", set())

#: (DSN, how it must be shown). The shown form is exact: masking by structure keeps
#: the host, port, path and every harmless key as written.
SHOWN = [
    (
        "postgresql://app:s3cr3t@db.example.com:5432/app",
        "postgresql://app:***@db.example.com:5432/app",
    ),
    ("postgresql//app:s3cr3t@db.example:5432/app", "***@db.example:5432/app"),
    ("postgresql://app:Tr0ub@dor-s3cr3t@127.0.0.1:1/app", "postgresql://***@127.0.0.1:1/app"),
    ("postgresql://app:p@ss-s3cr3t@127.0.0.1:1/app", "postgresql://***@127.0.0.1:1/app"),
    ("postgresql://app:pa/ss-s3cr3t@127.0.0.1:1/app", "postgresql://***@127.0.0.1:1/app"),
    ("postgresql://app:pa:ss-s3cr3t@127.0.0.1:1/app", "postgresql://app:***@127.0.0.1:1/app"),
    ("postgresql://app:p%40ss%2Fs3cr3t@h:1/app", "postgresql://app:***@h:1/app"),
    ("postgresql://app:127@127.0.0.1:1/app", "postgresql://app:***@127.0.0.1:1/app"),
    ("postgresql://app:s3cr3t@[::1]:1/app", "postgresql://app:***@[::1]:1/app"),
    ("postgresql://app:@127.0.0.1:1/app", "postgresql://app:@127.0.0.1:1/app"),
    ("postgresql://app:s3cr3t@127.0.0.1:abc/app", "postgresql://***@127.0.0.1:abc/app"),
    ("postgresql://app:s3cr3t/app", "postgresql://***/app"),
    (
        "postgresql://app@h/app?password=s3cr3t&sslmode=require",
        "postgresql://app@h/app?password=***&sslmode=require",
    ),
    (
        "postgres://app:s3cr3t@h1:1,h2:2/db?sslpassword=s3cr3t2",
        "postgres://app:***@h1:1,h2:2/db?sslpassword=***",
    ),
    ("host=x password=s3cr3t user=u", "host=x password=*** user=u"),
    ("host=x password = s3cr3t user=u", "host=x password = *** user=u"),
    ("host=x password='s3cr3t two' user=u", "host=x password=*** user=u"),
    ("host=x password='it\\'s s3cr3t' user=u", "host=x password=*** user=u"),
    ("host=x password='unterminated s3cr3t", "host=x ***"),
    ("host=x port=5432 password s3cr3t", "host=x port=5432 ***"),
    ("host=x passwrod=s3cr3t", "host=x passwrod=***"),
    ("s3cr3t", "***"),
    ("mysql://u:s3cr3t@h/db", "mysql://***@h/db"),
]


@pytest.mark.parametrize(("dsn", "shown"), SHOWN)
def test_each_form_is_shown_masked_by_its_structure(dsn, shown):
    assert redact_dsn(dsn) == shown
    assert "s3cr3t" not in redact.redact(f"cannot connect to {dsn}: refused", dsn)


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        ("postgresql://app:p@ss@h/db", "percent-encode"),
        ("postgresql://app:pa/ss@h/db", "percent-encode"),
        ("postgresql://app:pw@h:abc/db", "port that is not a number"),
        ("postgresql://app:s3cr3t/db", "port that is not a number"),
        ("host=h port=99999", "port that is not a number"),
        ("postgresql//app:s3cr3t@h/db", "not a valid connection string"),
        ("host=h password='s3cr3t", "not a valid connection string"),
    ],
)
def test_what_libpq_would_misread_is_a_problem_that_quotes_nothing(dsn, reason):
    found = problem(dsn)
    assert found is not None and reason in found
    assert "s3cr3t" not in found and "ss@" not in found


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:p%40ss@h:5432/db",
        "postgresql://app:pa:ss@h/db?sslmode=disable",
        "postgresql://app:p?ss@h/db",
        "postgresql://app@[::1]:5432/db",
        "postgresql:///db?host=/tmp",
        "host=/tmp dbname=x password='a b'",
    ],
)
def test_well_formed_dsns_are_no_problem(dsn):
    assert problem(dsn) is None


def test_a_password_that_is_part_of_the_host_leaves_the_host_alone():
    dsn = "postgresql://app:127@127.0.0.1:1/app"
    message = 'connection to server at "127.0.0.1", port 1 failed for user "app"'
    assert redact.redact(message, dsn) == message


def test_pieces_of_a_misread_dsn_quoted_by_the_driver_are_masked():
    dsn = "postgresql://app:Tr0ub@dor-s3cr3t@127.0.0.1:1/app"
    shown = redact.redact("failed to resolve host 'dor-s3cr3t@127.0.0.1'", dsn)
    assert shown == "failed to resolve host '***'"


def test_free_text_credentials_are_masked_by_pattern():
    text = (
        "a postgresql://u:p@ss-s3cr3t@h/db b password='it\\'s s3cr3t' c ?password=s3cr3t&x=1 "
        "d AIzaSyS3cr3tS3cr3tS3cr3t e Bearer s3cr3t-token"
    )
    shown = redact.redact(text)
    assert "s3cr3t" not in shown.lower(), shown
    assert "postgresql://***@h/db" in shown and "&x=1" in shown


def test_remembered_keys_and_dsns_are_masked_everywhere(monkeypatch):
    monkeypatch.setattr(redact, "_known_dsns", set())
    monkeypatch.setattr(redact, "_known_keys", set())
    redact.remember(dsns=["host=h password='a b s3cr3t'"], keys=["sk-live-s3cr3t-key", "x"])
    shown = redact.redact("dsn host=h password='a b s3cr3t' key sk-live-s3cr3t-key x")
    assert shown == "dsn host=h password=*** key *** x"


@pytest.mark.parametrize("formatter", [logs.TextFormatter(), logs.JsonFormatter()])
def test_log_lines_never_carry_a_secret_however_they_are_escaped(formatter, monkeypatch):
    dsn = "host=h password='it\\'s \"s3cr3t\"'"
    monkeypatch.setattr(redact, "_known_dsns", {dsn})
    record = logging.LogRecord("supervisor.x", logging.ERROR, __file__, 1, "failed", (), None)
    record.sw_fields = {"error": f"cannot connect to {dsn}", "nested": {"dsn": dsn}}
    line = formatter.format(record)
    assert "s3cr3t" not in line, line
    if isinstance(formatter, logs.JsonFormatter):
        assert json.loads(line)["nested"] == {"dsn": "host=h password=***"}
