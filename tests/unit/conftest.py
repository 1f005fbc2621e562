"""Fixtures for the Gemini provider's unit tests: the fake Gemini server, and the
providers pointed at it with their call records (defined in test_gemini.py, shared by
every Gemini test module from here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakegemini import FakeGemini
from tests.unit.test_gemini import make_provider, recorder  # noqa: F401 (fixtures)


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    """A started fake Gemini server of this test's own, stopped afterwards."""
    with FakeGemini() as server:
        yield server
