"""A short benchmark run through the real stack: the Prometheus counters count every
delivery once, and the rate a dashboard shows agrees with the benchmark's own figure.

The 5 % comparison on full-size runs is in docs/benchmarks.md ("Metrics vs benchmark",
`python -m tests.observability.bench_metrics`); this short run on a shared machine allows
for the last batch's settle lag, which weighs more in a run of a few seconds."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.tools import require_tool
from tests.observability.bench_metrics import one_run

# Long enough that the steady middle of the run spans ~10 scrapes: rate() over a window
# of only three or four samples is off by its extrapolation. With the faster dispatcher of
# 2026-12-02, 4,000 events left a 3.4 s steady window and read 0.26-0.53 of the real rate;
# 12,000 events read 1.03.
EVENTS = 24_000
# One-second scrapes, as a deployment's are coarser still. (A reading of half the real rate
# at 0.2 s was the harness starting the run before Prometheus scraped at all, fixed by
# `wait_scraping`; 0.2 s now reads 0.99 too, see docs/benchmarks.md.)
SCRAPE_INTERVAL_S = 1.0


def test_the_counters_tell_the_benchmarks_story(tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    result = one_run(prometheus, EVENTS, 32, SCRAPE_INTERVAL_S, tmp_path)
    assert result["delivered"] == EVENTS
    assert result["counted"] == EVENTS, result  # each success counted exactly once
    # The whole-run rate of a run this short is skewed by the scrape grid (the counter's
    # last step lands up to one interval after the last delivery); the 5 % comparison of
    # whole runs belongs to the full-size benchmark. The steady middle of the run is not.
    assert 0.8 <= result["steady_ratio"] <= 1.2, result
