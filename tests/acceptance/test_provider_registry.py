"""Adding a provider is one registry entry plus its module: a throwaway provider,
registered from a module of its own (loaded through `sitecustomize` on PYTHONPATH, so
no file of storyworker changes), is configured from its own declared variable and
writes a job end to end under a real `storyworker run`."""

from __future__ import annotations

import textwrap

import pytest

from tests.service import wait_for

pytestmark = pytest.mark.slow

ECHO_MODULE = textwrap.dedent(
    '''
    """A throwaway provider: every section repeats the word ECHO_WORD names."""

    from dataclasses import dataclass

    from generation.providers import ProviderEntry, register
    from generation.settings import setting
    from generation.types import Outline, Source


    @dataclass(frozen=True)
    class EchoConfig:
        word: str = setting("ECHO_WORD", doc="the word every section repeats", default="echo")


    class EchoProvider:
        name = "echo"
        served_by = Source("echo", "echo-1")
        embedding_model = ""

        def __init__(self, config, hooks):
            self._word = config.word

        def outline(self, request):
            count = request.preferences.bullet_count
            return Outline("Echoes", tuple(f"beat {i + 1}" for i in range(count)))

        def stream_section(self, request, outline, index, previous_text):
            for n in range(3):
                yield f"{self._word}-{index}-{n} "

        def summarize(self, request, outline, text):
            return f"{self._word} summary"

        def embed(self, text):
            return []

        def check(self):
            return None


    register(
        ProviderEntry(
            "echo",
            EchoConfig,
            "sitecustomize:EchoProvider",
            call_timeout=lambda config: 5.0,
        )
    )
    '''
)


def test_a_throwaway_provider_runs_a_job_from_its_own_registry_entry(
    service, job_factory, conn, tmp_path
):
    (tmp_path / "sitecustomize.py").write_text(ECHO_MODULE)
    job = job_factory(user_preferences={"bullet_count": 2, "words_per_bullet": 50})
    svc = service(
        GENERATION_PROVIDER="echo", ECHO_WORD="marimba", PYTHONPATH=str(tmp_path)
    ).start()

    def finished():
        row = conn.execute(
            "select j.status, c.content, c.summary from generation_jobs j"
            " join chapters c on c.id = j.chapter_id where j.id = %s",
            (job["id"],),
        ).fetchone()
        return row if row["status"] in ("completed", "failed") else None

    row = wait_for(finished, 60, "the echo provider's job to settle")
    assert svc.stop() == 0
    assert row["status"] == "completed", svc.logs()
    assert row["content"].count("marimba-0-") == 3 and row["content"].count("marimba-1-") == 3
    assert row["summary"] == "marimba summary"
