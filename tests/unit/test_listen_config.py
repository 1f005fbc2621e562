"""DATABASE_LISTEN_URL: validated like DATABASE_URL, and its password never shown."""

from __future__ import annotations

import pytest

from supervisor.config import load_settings
from supervisor.errors import ConfigError

BASE = {"DATABASE_URL": "postgresql://postgres:app-secret@pooler:6543/postgres"}


def test_it_is_read_and_its_password_is_not_shown():
    listen = "postgresql://postgres:listen-secret@db.example.supabase.co:5432/postgres"
    settings = load_settings({**BASE, "DATABASE_LISTEN_URL": listen}, dotenv_path=None)
    assert settings.database_listen_url == listen
    shown = repr(settings)
    assert "listen-secret" not in shown and "app-secret" not in shown
    assert "db.example.supabase.co" in shown


def test_unset_means_none():
    assert load_settings(BASE, dotenv_path=None).database_listen_url is None


@pytest.mark.parametrize(
    "value",
    ["mysql://u:listen-secret@h/db", "host=h password=listen-secret port=notaport x"],
)
def test_a_malformed_one_is_one_line_without_the_password(value):
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, "DATABASE_LISTEN_URL": value}, dotenv_path=None)
    message = str(info.value)
    assert message.startswith("DATABASE_LISTEN_URL ") and "\n" not in message
    assert "listen-secret" not in message
