"""What the network providers (Gemini, OpenAI-compatible) share around their requests:
their HTTP client's life, and how a section's prompt and output limit are made."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from generation.providers.calls import max_output_tokens
from generation.story import prompts
from generation.types import ChapterRequest, Outline


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
        return self._stream(prompt, self._limit(request.preferences.words_per_bullet))

    def _limit(self, words: int) -> int:
        """The output limit of a request for about `words` words."""
        return max_output_tokens(words)

    def _stream(self, prompt: prompts.Prompt, limit: int) -> Iterator[str]:
        raise NotImplementedError
