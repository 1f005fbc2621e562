"""Counters and histograms the worker processes record.

The supervisor sets PROMETHEUS_MULTIPROC_DIR before this module is first imported, so
every process writes its samples to files there and the health server adds them up
(prometheus_client's multiprocess mode, made for pre-fork servers).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from generation.types import CallRecord

JOBS = Counter("storyworker_jobs", "Jobs settled by this service, by outcome.", ["outcome"])
JOB_SECONDS = Histogram(
    "storyworker_job_duration_seconds",
    "Time from claim to settlement of one attempt.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
SECTION_SECONDS = Histogram(
    "storyworker_section_duration_seconds",
    "Time to write one section.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
)
LLM_CALLS = Counter(
    "storyworker_llm_calls", "LLM operations, by kind and outcome.", ["kind", "outcome"]
)
LLM_TOKENS = Counter(
    "storyworker_llm_tokens",
    "LLM tokens, by direction (thinking: the part of output spent thinking).",
    ["direction"],
)
LLM_RETRIES = Counter("storyworker_llm_retries", "LLM request attempts beyond the first.")
RESCUES = Counter(
    "storyworker_jobs_rescued", "Jobs taken back from dead workers, by how.", ["reason"]
)


def record_call(record: CallRecord) -> None:
    """Count one finished provider operation."""
    LLM_CALLS.labels(record.kind, record.outcome).inc()
    if record.input_tokens:
        LLM_TOKENS.labels("input").inc(record.input_tokens)
    if record.output_tokens:
        LLM_TOKENS.labels("output").inc(record.output_tokens)
    if record.thinking_tokens:
        LLM_TOKENS.labels("thinking").inc(record.thinking_tokens)
    if record.retries:
        LLM_RETRIES.inc(record.retries)
