"""A job's usage: summed per provider and model, over what earlier attempts stored."""

from __future__ import annotations

from generation.types import CallRecord
from supervisor.worker.usage import JobUsage


def record(kind: str, provider: str = "gemini", model: str = "gemini-3.5-flash", **counts):
    return CallRecord(kind, "ok", 0.1, provider=provider, model=model, **counts)


def test_calls_are_summed_per_provider_and_model_over_attempts():
    saved = {"provider": "gemini", "model": "gemini-3.5-flash", "calls": 2,
             "input_tokens": 10, "output_tokens": 30, "thinking_tokens": 5,
             "embedding_tokens": 0, "retries": 1}  # fmt: skip
    usage = JobUsage(saved)
    usage.add(record("prose", input_tokens=4, output_tokens=9, thinking_tokens=2, retries=1))
    usage.add(record("embedding", model="gemini-embedding-001", input_tokens=7))
    usage.add(record("check", input_tokens=99))  # a probe is not the job's
    assert usage.to_json() == [
        {"provider": "gemini", "model": "gemini-3.5-flash", "calls": 3, "input_tokens": 14,
         "output_tokens": 39, "thinking_tokens": 7, "embedding_tokens": 0, "retries": 2},
        {"provider": "gemini", "model": "gemini-embedding-001", "calls": 1, "input_tokens": 0,
         "output_tokens": 0, "thinking_tokens": 0, "embedding_tokens": 7, "retries": 0},
    ]  # fmt: skip
    assert JobUsage(usage.to_json()).to_json() == usage.to_json()  # a list round-trips


def test_nothing_spent_is_none_and_junk_is_ignored():
    assert JobUsage(None).to_json() is None
    usage = JobUsage({"provider": "x", "model": "m", "calls": "lots", "retries": -4})
    assert usage.to_json()["calls"] == 0 and usage.to_json()["retries"] == 0


def test_estimated_counts_are_marked_and_the_mark_survives_attempts():
    usage = JobUsage(None)
    usage.add(record("outline", provider="openai", model="m", input_tokens=5, output_tokens=3))
    assert "estimated" not in usage.to_json()
    usage.add(record("prose", provider="openai", model="m", output_tokens=40, estimated=True))
    assert usage.to_json()["estimated"] is True and usage.to_json()["output_tokens"] == 43
    again = JobUsage(usage.to_json())  # the next attempt starts from what was stored
    again.add(record("prose", provider="openai", model="m", output_tokens=2))
    assert again.to_json()["estimated"] is True and again.to_json()["output_tokens"] == 45
