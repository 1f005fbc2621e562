"""How an OpenAI-compatible server is asked for an answer in JSON (the outline, the
chapter memory): the forms, best first, and the walk down them.

"json_schema" is OpenAI's structured output (OpenAI, vLLM, Ollama, LM Studio, recent
llama.cpp); "json_object+schema" is JSON mode carrying the schema, which
llama-cpp-python's server turns into a grammar; "json_object" is plain JSON mode;
"text" asks for no format at all. Every form but the first also puts the schema in the
prompt, and every answer is parsed and checked by the caller. A server that refuses a
form (openai_wire.schema_rejected) is asked with the next; the form that worked is
kept by the provider for every later JSON answer (one server, one model).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from generation.errors import GenerationError
from generation.providers.calls import Operation
from generation.providers.openai_wire import schema_rejected
from generation.story.prompts import Prompt

log = logging.getLogger(__name__)

JSON_FORMS = ("json_schema", "json_object+schema", "json_object", "text")
#: What precedes the JSON Schema where the prompt carries it.
SCHEMA_IN_PROMPT = "The JSON object must match this JSON Schema: "
#: JSON mode: valid JSON, its shape asked for by the prompt alone (which names JSON, as
#: OpenAI requires of JSON mode).
JSON_MODE: dict[str, Any] = {"type": "json_object"}


def response_format(name: str, schema: Mapping[str, Any], form: str) -> dict[str, Any] | None:
    """The response_format of a JSON answer named `name` of shape `schema` in `form`
    (one of JSON_FORMS); None for "text"."""
    if form == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": name, "strict": True, "schema": dict(schema)},
        }
    if form == "json_object+schema":
        return {"type": "json_object", "schema": dict(schema)}
    if form == "json_object":
        return dict(JSON_MODE)
    if form == "text":
        return None
    raise ValueError(f"unknown JSON form {form!r}")


def schema_prompt(prompt: Prompt, schema: Mapping[str, Any], form: str) -> Prompt:
    """`prompt`, with `schema` added for every form that does not carry it as
    structured output."""
    if form == "json_schema":
        return prompt
    text = json.dumps(schema, separators=(",", ":"))
    return Prompt(prompt.system, f"{prompt.user}\n\n{SCHEMA_IN_PROMPT}{text}")


#: complete(prompt, response_format) -> the answer's text: one request.
Complete = Callable[[Prompt, "dict[str, Any] | None"], str]


def in_forms(
    op: Operation,
    complete: Complete,
    ask: tuple[str, Mapping[str, Any], Prompt],
    start: str,
    what: str,
) -> tuple[str, str]:
    """The answer to `ask` (name, schema, prompt) and the form that took it, trying the
    forms from `start` on: on to the next whenever the server refuses the form itself
    (each further form counts as a retry of `op`); any other failure, or a refusal of
    the last form, propagates."""
    name, schema, prompt = ask
    forms = JSON_FORMS[JSON_FORMS.index(start) :]
    for form in forms:
        try:
            asked = schema_prompt(prompt, schema, form)
            text = complete(asked, response_format(name, schema, form))
        except GenerationError as exc:
            if not schema_rejected(exc) or form == forms[-1]:
                raise
            op.retries += 1  # one more request for the same answer
            log.info("JSON form refused; trying the next", extra={"form": form})
            continue
        if form != start:
            log.warning("the server takes %s as %s from now on", what, form, extra={"form": form})
        return text, form
    raise AssertionError("unreachable: the last form raises")
