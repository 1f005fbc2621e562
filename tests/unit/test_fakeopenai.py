"""The fake OpenAI-compatible server paces a stream as a model does (`chunk_delay`),
which the live-text benchmark relies on: read through the real openai SDK."""

from __future__ import annotations

import dataclasses
import itertools
import time

import openai

from tests.fakeopenai import MODEL, VALID_KEY, FakeOpenAI, stream_reply

PIECES = ["One ", "two ", "three ", "four"]


def arrivals(delay: float) -> tuple[list[str], list[float]]:
    """The content pieces of one paced stream and when each arrived (monotonic)."""
    with FakeOpenAI() as fake:
        fake.queue("stream", dataclasses.replace(stream_reply(PIECES), chunk_delay=delay))
        client = openai.OpenAI(api_key=VALID_KEY, base_url=fake.base_url, timeout=5)
        texts, times = [], []
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "go"}], stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
                times.append(time.monotonic())
        client.close()
    return texts, times


def test_chunks_of_a_paced_stream_arrive_chunk_delay_apart():
    texts, times = arrivals(0.15)
    assert texts == PIECES
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.14, gaps


def test_an_unpaced_stream_arrives_at_once():
    texts, times = arrivals(0.0)
    assert texts == PIECES and times[-1] - times[0] < 0.1
