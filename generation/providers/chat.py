"""What the network providers (Gemini, OpenAI-compatible) share around their requests:
their HTTP client's life, how a section's prompt and output limit are made, and what a
job's preferences ask of every generation request (`Sampling`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from generation.providers.calls import max_output_tokens
from generation.story import prompts
from generation.types import ChapterRequest, Outline


@dataclass(frozen=True)
class Sampling:
    """What a job's preferences ask of each of its outline, section and summary requests
    (never of an embedding): the temperature (None: the provider's default) and the
    content rating (None: none; Gemini maps it to safety settings)."""

    temperature: float | None = None
    content_rating: str | None = None

    @classmethod
    def of(cls, request: ChapterRequest) -> Sampling:
        prefs = request.preferences
        return cls(prefs.temperature, prefs.content_rating)


class ChatProvider:
    """A provider over an SDK client: subclasses set `_client` and `_stream`."""

    _client: Any

    def close(self) -> None:
        """Close the HTTP connections; the provider cannot be used afterwards."""
        self._client.close()

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        """Yield the section's prose as it streams. Failures before the first chunk are
        retried; a stream cut after text was yielded raises a retryable error (the job
        resumes from its checkpoint); a refusal, even in a later chunk, RefusedError;
        a stop at the output limit, OutputLimitError (the writer continues it)."""
        prompt = prompts.section_prompt(request, outline, index, previous_text)
        limit = self._limit(request.preferences.words_per_bullet)
        return self._stream(prompt, limit, Sampling.of(request))

    def _limit(self, words: int) -> int:
        """The output limit of a request for about `words` words."""
        return max_output_tokens(words)

    def _stream(self, prompt: prompts.Prompt, limit: int, sampling: Sampling) -> Iterator[str]:
        raise NotImplementedError
