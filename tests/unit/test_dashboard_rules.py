"""The dashboard's rules without a database: who may bind where, the session cookie
and CSRF token, the same-origin check, the filter's parsing, the keyset cursor, the
charts' geometry, and the settings it reads."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from supervisor.config import load_settings
from supervisor.dashboard import charts, filters
from supervisor.dashboard.auth import COOKIE, Auth, safe_next
from supervisor.dashboard.cache import TtlCache
from supervisor.dashboard.server import is_loopback, require_safe
from supervisor.db.dashboard import Cursor, JobFilter
from supervisor.errors import ConfigError

TOKEN = "x" * 20


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.5", "example.com", "localhost.evil"])
def test_public_addresses(host):
    assert not is_loopback(host)


def settings(**env: str):
    return load_settings({"DATABASE_URL": "postgresql://u:secret@db/x", **env}, dotenv_path=None)


def test_the_defaults_are_loopback_port_3952_and_read_only():
    s = settings()
    assert (s.dashboard_host, s.dashboard_port, s.dashboard_token) == ("127.0.0.1", 3952, None)
    require_safe(s)
    assert "dashboard_token" not in repr(settings(DASHBOARD_TOKEN=TOKEN))
    assert TOKEN not in repr(settings(DASHBOARD_TOKEN=TOKEN))


def test_a_public_bind_needs_a_token_of_sixteen_characters_or_more():
    with pytest.raises(ConfigError, match=r"DASHBOARD_HOST 0\.0\.0\.0 is not a loopback"):
        require_safe(settings(DASHBOARD_HOST="0.0.0.0"))
    with pytest.raises(ConfigError, match="at least 16") as caught:
        require_safe(settings(DASHBOARD_HOST="0.0.0.0", DASHBOARD_TOKEN="short"))
    assert "short" not in str(caught.value)
    require_safe(settings(DASHBOARD_HOST="0.0.0.0", DASHBOARD_TOKEN=TOKEN))
    with pytest.raises(ConfigError, match="DASHBOARD_PORT"):
        settings(DASHBOARD_PORT="99999")


def test_the_cookie_is_signed_and_never_the_token():
    auth = Auth(TOKEN)
    cookie = auth.new_cookie()
    assert TOKEN not in cookie
    session = auth.session({COOKIE: cookie}, {})
    assert session is not None and not session.bearer
    nonce, mac = cookie.split(".")
    assert auth.session({COOKIE: f"{nonce}.{'0' * len(mac)}"}, {}) is None
    assert auth.session({COOKIE: f"other.{mac}"}, {}) is None
    assert Auth("y" * 20).session({COOKIE: cookie}, {}) is None
    assert Auth(None).session({COOKIE: cookie}, {}) is None
    assert auth.session({}, {"Authorization": f"Bearer {TOKEN}"}).bearer
    assert auth.session({}, {"Authorization": "Bearer wrong"}) is None
    assert not Auth(None).accepts("")


def test_a_post_is_same_origin_by_fetch_metadata_or_by_its_csrf_token():
    auth = Auth(TOKEN)
    session = auth.session({COOKIE: auth.new_cookie()}, {})
    csrf = auth.csrf(session)
    host = "http://127.0.0.1:3952/"
    ok = lambda headers, token=None: auth.same_origin(headers, host, session, token)  # noqa: E731
    assert ok({"Sec-Fetch-Site": "same-origin"})
    for site in ("cross-site", "same-site", "none"):
        assert not ok({"Sec-Fetch-Site": site}, csrf)
    assert ok({}, csrf)
    assert ok({"Origin": "http://127.0.0.1:3952"}, csrf)
    assert not ok({"Origin": "http://evil.example"}, csrf)
    assert not ok({})
    assert not ok({}, "0" * 64)
    assert not auth.same_origin({}, host, None, csrf)
    bearer = auth.session({}, {"Authorization": f"Bearer {TOKEN}"})
    assert auth.same_origin({}, host, bearer, None)
    assert not auth.same_origin({"Sec-Fetch-Site": "cross-site"}, host, bearer, None)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/jobs?status=failed", "/jobs?status=failed"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/\\evil", "/"),
        (None, "/"),
    ],
)
def test_after_login_only_a_path_of_this_site(target, expected):
    assert safe_next(target) == expected


def test_the_filter_keeps_what_parses_and_says_what_does_not():
    user = uuid4()
    parsed = filters.parse(
        {
            "status": "failed",
            "user": str(user),
            "story": "nope",
            "q": " quota ",
            "from": "2026-12-01T09:00",
            "to": "yesterday",
            "provider": "",
        }
    )
    assert parsed.where == JobFilter(
        status="failed",
        user_id=user,
        text="quota",
        created_from=datetime(2026, 12, 1, 9, tzinfo=UTC),
    )
    assert parsed.args == {
        "status": "failed",
        "user": str(user),
        "q": "quota",
        "from": "2026-12-01T09:00",
    }
    assert [p.split()[0] for p in parsed.problems] == ["story", "to"]
    assert filters.parse({"status": "lost"}).where == JobFilter()


def test_the_error_text_filter_is_literal():
    assert JobFilter(text="100%_\\").params()["pattern"] == "%100\\%\\_\\\\%"


def test_a_bulk_action_narrows_the_statuses_to_what_it_can_change():
    assert JobFilter().params(("failed", "cancelled"))["statuses"] == ["failed", "cancelled"]
    assert JobFilter(status="failed").params(("failed", "cancelled"))["statuses"] == ["failed"]
    assert JobFilter(status="pending").params(("failed", "cancelled"))["statuses"] == []


def test_a_cursor_round_trips_and_refuses_what_it_did_not_make():
    job = uuid4()
    cursor = Cursor("2026-12-03 10:00:00.123456+00", job)
    assert Cursor.parse(cursor.token()) == cursor
    assert Cursor.parse(f"infinity|{job}").created_at == "infinity"
    for bad in ("garbage", f"1; drop table x|{job}", "2026-12-03|not-a-uuid"):
        with pytest.raises(ValueError):
            Cursor.parse(bad)


def test_throughput_bars_stack_and_scale_to_the_tallest_bucket():
    chart = charts.throughput("t", [0, 2, 4], [0, 0, 4], 300)
    assert chart.scale == "8 jobs"
    tallest = [b for b in chart.bars if b.x > 2 * charts.WIDTH / 3]
    assert sum(b.height for b in tallest) == pytest.approx(charts.HEIGHT - charts.AXIS)
    assert {b.kind for b in chart.bars} == {"ok", "bad"}
    assert [label for _, label in chart.ticks][-1] == "now"
    assert "-15m: 0 completed, 0 failed" not in [b.title for b in chart.bars]  # empty: no bar


def test_latency_bars_show_median_and_95th_percentile():
    chart = charts.latency("l", [None, 1.0, 0.5], [None, 4.0, 0.5], 3600)
    assert chart.scale == "4.0 s"
    assert len(chart.bars) == 4
    assert chart.bars[1].title == "-2h: median 1.0 s, p95 4.0 s"
    assert charts.seconds(0.25) == "250 ms" and charts.seconds(600) == "10.0 min"


def test_slow_figures_are_computed_at_most_once_per_ttl():
    now = [100.0]
    cache = TtlCache(15, clock=lambda: now[0])
    computed = []

    def compute() -> int:
        computed.append(now[0])
        return len(computed)

    assert cache.get("k", compute)[0] == 1
    now[0] += 14.9
    assert cache.get("k", compute)[0] == 1
    now[0] += 0.2
    assert cache.get("k", compute)[0] == 2
    assert TtlCache(0).get("k", compute)[0] == 3  # no cache at all
    assert computed == [100.0, pytest.approx(115.1), pytest.approx(115.1)]
