"""What a job spent, summed over all its attempts, per provider and model.

Stored in `generation_jobs.usage` with the job's checkpoints and its settlement (never
in a transaction of its own): one JSON object when one provider and model served the
job, else a list with one object per provider and model. What a crashed attempt spent
after its last checkpoint is not counted: nothing was written for it. An entry some of
whose token counts are estimates (a server that reports no usage) says
`"estimated": true`; the key is absent otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from generation.types import CallRecord

#: The counters of one provider and model, in the order they are stored.
COUNTERS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "thinking_tokens",
    "embedding_tokens",
    "retries",
)


@dataclass
class Spent:
    provider: str
    model: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    embedding_tokens: int = 0
    retries: int = 0
    #: Some token counts are estimates: the server reported none.
    estimated: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Spent:
        counters = {name: _count(data.get(name)) for name in COUNTERS}
        provider, model = str(data.get("provider", "")), str(data.get("model", ""))
        return cls(provider, model, **counters, estimated=data.get("estimated") is True)

    def to_json(self) -> dict[str, Any]:
        entry = asdict(self)
        if not self.estimated:
            del entry["estimated"]
        return entry


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class JobUsage:
    """A job's usage: what earlier attempts stored, plus this attempt's calls."""

    def __init__(self, saved: Any = None) -> None:
        entries = saved if isinstance(saved, list) else [saved] if saved else []
        self._by_source: dict[tuple[str, str], Spent] = {}
        for entry in entries:
            if isinstance(entry, Mapping):
                spent = Spent.from_json(entry)
                self._merge(spent)

    def _merge(self, spent: Spent) -> None:
        mine = self._source(spent.provider, spent.model)
        for name in COUNTERS:
            setattr(mine, name, getattr(mine, name) + getattr(spent, name))
        mine.estimated = mine.estimated or spent.estimated

    def _source(self, provider: str, model: str) -> Spent:
        return self._by_source.setdefault((provider, model), Spent(provider, model))

    def add(self, record: CallRecord) -> None:
        """Count one finished provider operation (a start-up check is not the job's)."""
        if record.kind == "check":
            return
        spent = self._source(record.provider, record.model)
        spent.calls += 1
        spent.retries += record.retries
        spent.estimated = spent.estimated or record.estimated
        if record.kind == "embedding":
            spent.embedding_tokens += record.input_tokens
            return
        spent.input_tokens += record.input_tokens
        spent.output_tokens += record.output_tokens
        spent.thinking_tokens += record.thinking_tokens

    def to_json(self) -> dict[str, Any] | list[dict[str, Any]] | None:
        entries = [spent.to_json() for spent in self._by_source.values()]
        if not entries:
            return None
        return entries[0] if len(entries) == 1 else entries
