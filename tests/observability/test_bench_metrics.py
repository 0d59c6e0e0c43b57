"""A short benchmark run through the real stack: the Prometheus counters count every
delivery once, and the rate a dashboard shows agrees with the benchmark's own figure.

The 5 % comparison on full-size runs is in docs/benchmarks.md ("Metrics vs benchmark",
`python -m tests.observability.bench_metrics`); this short run on a shared machine allows
for the last batch's settle lag, which weighs more in a run of a few seconds."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.tools import require_tool
from tests.observability.bench_metrics import one_run

EVENTS = 2000


def test_the_counters_tell_the_benchmarks_story(tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    result = one_run(prometheus, EVENTS, 32, 0.2, tmp_path)
    assert result["delivered"] == EVENTS
    assert result["counted"] == EVENTS, result  # each success counted exactly once
    assert 0.8 <= result["ratio"] <= 1.05, result
    assert 0.8 <= result["steady_ratio"] <= 1.2, result
