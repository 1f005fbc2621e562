"""The dashboard in a real headless Chromium (Selenium + chromedriver, both from the
OS packages), served by a real `storyworker dashboard` (gunicorn) over a real
PostgreSQL, while a real `storyworker run` writes chapters with the offline provider.
Screenshots of each page are saved as artefacts (tests/browser.py says where)."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.browser import (
    Dashboard,
    artifacts,
    fresh_profile,
    missing_browser,
    remove_profile,
    start_browser,
)
from tests.service import wait_for

pytestmark = pytest.mark.slow

TOKEN = "browser-test-token-0123456789"
#: About eight seconds a job: 4 sections of 8 chunks, 250 ms each.
SLOW = {"OFFLINE_LATENCY_MS": "250", "WORKER_CONCURRENCY": "2"}
PREFS = {"bullet_count": 4, "words_per_bullet": 90}


@pytest.fixture
def browser() -> Iterator[Any]:
    why = missing_browser()
    if why:
        pytest.skip(f"no browser for the dashboard tests: {why}")
    profile = fresh_profile()
    driver = start_browser(profile)
    try:
        yield driver
    finally:
        driver.quit()
        remove_profile(profile)


@pytest.fixture
def make(conn, job_factory, chapter_factory, sequence_factory, user_factory) -> SimpleNamespace:
    """The suite's factories and connection, under one name."""
    return SimpleNamespace(
        conn=conn,
        job=job_factory,
        chapter=chapter_factory,
        sequence=sequence_factory,
        user=user_factory,
    )


@pytest.fixture
def dashboard(database_url, tmp_path) -> Iterator[Any]:
    started: list[Dashboard] = []

    def make(**env: str) -> Dashboard:
        served = Dashboard(database_url, tmp_path, **env).start()
        started.append(served)
        return served

    yield make
    for served in started:
        served.stop()
        print(f"--- {served.log_path.name} ---", served.logs()[-4000:], sep="\n")


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(artifacts() / f"dashboard-{name}.png"))


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def attribute(driver: Any, selector: str, name: str) -> str | None:
    """An attribute read in one step: the page may re-render its live part between a
    find and a read."""
    script = (
        "var e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1]);"
    )
    return driver.execute_script(script, selector, name)


def texts(driver: Any, selector: str) -> list[str]:
    """The text of every element `selector` finds, read in one step."""
    script = "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText);"
    return driver.execute_script(script, selector)


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def log_in(driver: Any, served: Dashboard) -> None:
    driver.get(f"{served.url}/jobs")
    assert driver.current_url.startswith(f"{served.url}/login?next=")
    css(driver, "input[name=token]").send_keys(TOKEN)
    css(driver, ".login button").click()
    wait_for(lambda: driver.current_url == f"{served.url}/jobs", 10, "back on /jobs")


def status_of(conn, job_id) -> str:
    return conn.execute("select status from generation_jobs where id = %s", (job_id,)).fetchone()[
        "status"
    ]


def wait_status(conn, job_id, status: str, timeout: float = 60) -> None:
    wait_for(lambda: status_of(conn, job_id) == status, timeout, f"job {job_id} {status}", 0.1)


def page_counts(driver: Any) -> dict[str, str]:
    script = (
        "return Object.fromEntries(Array.from(document.querySelectorAll('a.count'),"
        " a => [a.dataset.status, a.querySelector('.n').innerText]));"
    )
    return driver.execute_script(script)


def seed_journey(make: SimpleNamespace) -> dict:
    story = make.sequence(title="The Lighthouse Keeper")
    good = make.job(make.chapter(sequence_id=story["id"], chapter_number=1), user_preferences=PREFS)
    # The app queued this one under the wrong user: the worker refuses it for good.
    stranger = make.user()
    bad = make.job(
        make.chapter(sequence_id=story["id"], chapter_number=2),
        user_id=stranger["id"],
        user_preferences=PREFS,
    )
    return {"story": story, "good": good, "bad": bad}


def test_overview_counts_filter_to_failed_retry_with_the_token_and_watch_the_text_grow(
    browser, dashboard, service, make
):
    conn = make.conn
    made = seed_journey(make)
    good, bad = made["good"], made["bad"]
    service(**SLOW).start()
    served = dashboard(DASHBOARD_TOKEN=TOKEN)
    wait_status(conn, bad["id"], "failed")
    wait_status(conn, good["id"], "completed")

    log_in(browser, served)
    browser.get(f"{served.url}/")
    assert page_counts(browser) == {
        "pending": "0",
        "processing": "0",
        "completed": "1",
        "failed": "1",
        "cancelled": "0",
    }
    shot(browser, "overview")

    browser.get(f"{served.url}/jobs")
    from selenium.webdriver.support.ui import Select

    Select(css(browser, "select[name=status]")).select_by_value("failed")
    css(browser, ".filters button").click()
    wait_for(lambda: "status=failed" in browser.current_url, 10, "the failed filter")
    rows = texts(browser, "table.jobs tbody tr")
    assert len(rows) == 1 and str(bad["id"])[:8] in rows[0]
    assert "does not belong to user" in rows[0]
    shot(browser, "jobs-failed")

    browser.execute_script("document.querySelector('table.jobs tbody a').click()")
    wait_for(lambda: str(bad["id"]) in browser.current_url, 10, "the job page")
    assert attribute(browser, "#job-status", "data-status") == "failed"
    assert "does not belong to user" in texts(browser, "#job-error")[0]
    shot(browser, "job-failed")
    # The app's data is mended; the operator retries the job from its page.
    conn.execute(
        "update generation_jobs set user_id = %s where id = %s", (good["user_id"], bad["id"])
    )
    browser.execute_script("document.getElementById('retry').click()")
    watch_text_grow(browser, conn, bad)
    # What the worker recorded it sent the model, as the page shows it.
    wait_for(lambda: texts(browser, "#context-manifest"), 5, "the context manifest")
    shot(browser, "job-completed")

    browser.get(f"{served.url}/stories/{made['story']['id']}")
    chapters = texts(browser, "#live tbody tr")
    assert [row.split()[0] for row in chapters] == ["1", "2"]
    assert str(bad["id"])[:8] in chapters[1] and "completed" in chapters[1]
    shot(browser, "story")

    browser.get(f"{served.url}/workers")
    wait_for(lambda: len(texts(browser, ".supervisor tbody tr")) == 2, 10, "two workers")
    shot(browser, "workers")
    phone_view(browser, served)


def watch_text_grow(browser: Any, conn, job: dict) -> None:
    """From the retry on: the page's text keeps up with the chapter (new text within a
    second) until the job completes, and ends as the chapter's full text."""
    text = lambda: css(browser, "#chapter-text").text  # noqa: E731
    lengths, lags = [], []
    deadline = time.monotonic() + 60
    while attribute(browser, "#job-status", "data-status") != "completed":
        assert time.monotonic() < deadline, "the job page never said completed"
        row = conn.execute(
            "select c.content, j.status from chapters c join generation_jobs j"
            " on j.chapter_id = c.id where j.id = %s",
            (job["id"],),
        ).fetchone()
        if row["status"] == "processing" and row["content"]:
            asked = time.monotonic()
            written = row["content"]
            wait_for(
                lambda w=written: text().startswith(w[:60]) and len(text()) >= len(w.strip()),
                3,
                "the page to catch up",
            )
            lags.append(time.monotonic() - asked)
            lengths.append(len(text()))
            if len(lengths) == 3:
                shot(browser, "job-growing")
        time.sleep(0.3)
    assert len(set(lengths)) >= 3, f"the text should be seen growing: {lengths}"
    assert lengths == sorted(lengths)
    assert max(lags) < 1.0, f"new text took {max(lags):.2f}s to show"
    final = conn.execute("select content from chapters where id = %s", (job["chapter_id"],))
    wait_for(lambda: text() == final.fetchone()["content"].strip(), 5, "the full text")


def phone_view(browser: Any, served: Dashboard) -> None:
    browser.set_window_size(390, 844)
    for page in ("", "jobs", "workers"):
        browser.get(f"{served.url}/{page}")
        shot(browser, f"phone-{page or 'overview'}")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 1, f"/{page} is wider than a phone by {overflow}px"
    browser.set_window_size(1280, 1000)


def test_bulk_cancel_of_a_filtered_set_shows_the_count_first(browser, dashboard, service, make):
    conn = make.conn
    user = make.user()
    story = make.sequence(user_id=user["id"], title="Many Chapters")
    later = [
        make.job(make.chapter(sequence_id=story["id"], chapter_number=n), user_preferences=PREFS)
        for n in range(1, 8)
    ]
    # Scheduled for tomorrow: the worker leaves them pending.
    conn.execute(
        "update generation_jobs set run_after = now() + interval '1 day' where id = any(%s)",
        ([j["id"] for j in later],),
    )
    bystander = make.job(user_preferences=PREFS)
    service(**SLOW).start()
    served = dashboard(DASHBOARD_TOKEN=TOKEN)
    log_in(browser, served)
    query = urllib.parse.urlencode({"status": "pending", "user": str(user["id"])})
    browser.get(f"{served.url}/jobs?{query}")
    assert len(texts(browser, "table.jobs tbody tr")) == 7
    css(browser, ".bulk a.danger").click()
    assert attribute(browser, "#bulk-count", "data-count") == "7"
    assert "7 jobs match" in texts(browser, "#bulk-count")[0]
    shot(browser, "bulk-confirm")
    browser.execute_script("document.getElementById('confirm').click()")
    wait_for(lambda: all_css(browser, "#notice"), 10, "the notice")
    assert texts(browser, "#notice") == ["Cancelled 7 jobs."]
    shot(browser, "bulk-done")
    statuses = {status_of(conn, j["id"]) for j in later}
    assert statuses == {"cancelled"}
    assert status_of(conn, bystander["id"]) != "cancelled"
    assert texts(browser, "table.jobs tbody tr") == ["No job matches."]


def forge(browser: Any, url: str) -> str:
    """Submit a form to `url` from another site (a data: page); the answer's text."""
    page = (
        "<form method=post action='" + url + "'><input name=csrf value=x></form>"
        "<script>document.forms[0].submit()</script>"
    )
    browser.get("data:text/html," + urllib.parse.quote(page))
    wait_for(lambda: browser.current_url == url, 10, "the forged POST's answer")
    return css(browser, "body").text


def test_read_only_shows_no_action_and_forged_posts_are_refused(browser, dashboard, service, make):
    conn = make.conn
    job = make.job(user_id=make.user()["id"], user_preferences=PREFS)
    service(**SLOW).start()
    wait_status(conn, job["id"], "failed")
    read_only = dashboard()
    for path in ("/", "/jobs?status=failed", f"/jobs/{job['id']}", "/workers"):
        browser.get(read_only.url + path)
        assert "read-only" in css(browser, "header").text
        assert not all_css(browser, "form[method=post]"), path
        assert not all_css(browser, ".bulk, #retry, #cancel"), path
    shot(browser, "read-only-job")
    assert "read-only" in forge(browser, f"{read_only.url}/jobs/{job['id']}/retry")
    # With a token, and the operator logged in, another site still cannot act.
    guarded = dashboard(DASHBOARD_TOKEN=TOKEN)
    log_in(browser, guarded)
    answer = forge(browser, f"{guarded.url}/jobs/{job['id']}/retry")
    assert "log in first" in answer or "refused" in answer
    shot(browser, "forged-post")
    assert status_of(conn, job["id"]) == "failed"


def test_titles_and_chapter_text_with_script_tags_render_as_text(browser, dashboard, make):
    conn = make.conn
    evil = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"
    story = make.sequence(title=f"Title {evil}")
    chapter = make.chapter(sequence_id=story["id"], title=evil)
    conn.execute("update chapters set content = %s where id = %s", (f"Start {evil}", chapter["id"]))
    job = make.job(chapter)
    conn.execute(
        "update generation_jobs set run_after = now() + interval '1 day' where id = %s",
        (job["id"],),
    )
    served = dashboard()
    browser.get(f"{served.url}/stories/{story['id']}")
    assert css(browser, "#story-title").text == f"Title {evil}"
    browser.get(f"{served.url}/jobs/{job['id']}")
    assert css(browser, "#chapter-text").text == f"Start {evil}"
    # Live text arrives as text too.
    conn.execute("update chapters set content = content || %s where id = %s", (evil, chapter["id"]))
    wait_for(lambda: css(browser, "#chapter-text").text.count("<script>") == 2, 3, "the live text")
    shot(browser, "escaped")
    assert browser.execute_script("return window.pwned === undefined")
