"""Settings declared once, as gunicorn's `Setting` classes are: a dataclass field names
its environment variable, its parser (the validator) and its description in one place.

`setting(...)` makes such a field. The service's own Settings and every provider's
config class are declared with it; whoever reads the environment walks the fields
(`declared`), and the README's configuration table is tested against the same list.
A parser raises `Invalid` with the reason; the reader puts the variable's name in front.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

Parser = Callable[[str], Any]
MISSING = dataclasses.MISSING


class Invalid(ValueError):
    """A value that does not parse; the message says why (never quoting a secret)."""


@dataclass(frozen=True)
class Variable:
    """Where one field comes from and what it means."""

    #: The environment variables that may hold it, the first being its name.
    names: tuple[str, ...]
    parse: Parser
    doc: str
    #: Never printed: not by a repr, a parser's message or an error.
    secret: bool = False
    #: What to say when a provider in use lacks it ("{names}" is replaced); None: the
    #: field has a default or is not required.
    missing: str | None = None

    @property
    def name(self) -> str:
        return self.names[0]


def setting(
    names: str | tuple[str, ...],
    parse: Parser | None = None,
    *,
    doc: str,
    default: Any = MISSING,
    secret: bool = False,
    missing: str | None = None,
    shown: bool = True,
) -> Any:
    """A dataclass field read from the environment variable(s) `names`; a `secret` is
    taken as it is (never parsed, so no message can quote it) and, like a field not
    `shown`, left out of the repr."""
    variable = Variable(
        names=(names,) if isinstance(names, str) else names,
        parse=parse or text,
        doc=doc,
        secret=secret,
        missing=missing,
    )
    return dataclasses.field(
        default=default, repr=shown and not secret, metadata={"env": variable}
    )


def declared(cls: type) -> list[tuple[str, Variable]]:
    """(field name, Variable) for every field of the dataclass `cls` read from the
    environment, in declaration order."""
    return [(f.name, f.metadata["env"]) for f in dataclasses.fields(cls) if "env" in f.metadata]


def read(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    """The values of `cls`'s declared fields that `env` sets (blank counts as unset),
    parsed; Invalid("VARIABLE reason") on the first bad one."""
    values: dict[str, Any] = {}
    for name, variable in declared(cls):
        for key in variable.names:
            raw = env.get(key)
            if raw is None or not raw.strip():
                continue
            if variable.secret:
                values[name] = raw.strip()
                break
            try:
                parsed = variable.parse(raw)
            except Invalid as exc:
                raise Invalid(f"{key} {exc}") from None
            if parsed is not None:
                values[name] = parsed
            break
    return values


def options(cls: type, values: Mapping[str, Any]) -> SimpleNamespace:
    """Every field of the dataclass `cls` by name: `values`' or its declared default
    (None where it has none), without building (or validating) an instance."""
    return SimpleNamespace(
        **{f.name: values.get(f.name, default_of(cls, f.name)) for f in dataclasses.fields(cls)}
    )


def default_of(cls: type, name: str) -> Any:
    """The declared default of field `name` of `cls` (None when it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            return None
    raise AttributeError(f"{cls.__name__} has no field {name!r}")


# Parsers ------------------------------------------------------------------------------


def integer(*, minimum: int, maximum: int | None = None) -> Parser:
    def parse(raw: str) -> int:
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        try:
            value = int(raw.strip())
        except ValueError:
            raise Invalid(f"must be an integer {bound}, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise Invalid(f"must be an integer {bound}, got {value}")
        return value

    return parse


def number(*, minimum: float, exclusive: bool = False) -> Parser:
    def parse(raw: str) -> float:
        op = ">" if exclusive else ">="
        try:
            value = float(raw.strip())
        except ValueError:
            raise Invalid(f"must be a number {op} {minimum:g}, got {raw!r}") from None
        if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
            raise Invalid(f"must be a number {op} {minimum:g}, got {raw.strip()}")
        return value

    return parse


def choice(choices: tuple[str, ...], *, upper: bool = False) -> Parser:
    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}; got {raw!r}")
        return value

    return parse


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise Invalid(f"must be true or false, got {raw!r}")


def text(raw: str) -> str | None:
    return raw.strip() or None


def url(raw: str) -> str | None:
    value = raw.strip()
    if value and urlsplit(value).scheme not in ("http", "https"):
        raise Invalid(f"must be an http(s) URL, got {value!r}")
    return value or None
