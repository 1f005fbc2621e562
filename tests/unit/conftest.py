"""Fixtures for the Gemini provider's unit tests: the fake Gemini server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakegemini import FakeGemini


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    """A started fake Gemini server of this test's own, stopped afterwards."""
    with FakeGemini() as server:
        yield server
