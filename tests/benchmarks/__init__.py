"""Benchmarks: `python -m tests.benchmarks` prints figures; nothing here asserts.

They start their own throwaway PostgreSQL (or use DATABASE_URL), run each measurement
several times and print medians with min-max, plus ratios measured in the same run.
Peers (procrastinate, pgqueuer) come from `pip install -e '.[bench]'`.
"""
