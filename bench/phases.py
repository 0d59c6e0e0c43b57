"""The phases of `bench.retention` and their figures: the drain's rate and latencies and
the probe's, over a phase or a window of it, and a window placed among the windows as
long of the quiet phases (a two-second window's p99 is its few slowest probes, and moves
from window to window with no maintenance at all; that spread is the resolution of any
ratio taken in one window)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Phase:
    """One phase: (finished at, latency ms) of each drain batch and each probe in it."""

    began: float
    ended: float = 0.0
    batches: list[tuple[float, float]] = field(default_factory=list)
    probes: list[tuple[float, float]] = field(default_factory=list)


def _latency(samples: list[float], name: str) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return {f"{name}_p50_ms": round(statistics.median(ordered), 1),
            f"{name}_p99_ms": round(p99, 1), f"{name}_max_ms": round(ordered[-1], 1)}  # fmt: skip


def stats(phase: Phase, batch: int, window: tuple[float, float] | None = None) -> dict[str, Any]:
    """The drain's rate and latencies, and the probe's, over the phase or a window of it."""
    start, end = window or (phase.began, phase.ended)
    batches = [ms for at, ms in phase.batches if start <= at <= end]
    probes = [ms for at, ms in phase.probes if start <= at <= end]
    return {
        "deliveries_per_s": round(len(batches) * batch / (end - start)),
        **_latency(batches, "batch"),
        **_latency(probes, "probe"),
    }


def quiet_windows(phases: list[Phase], length_s: float, batch: int) -> list[dict[str, Any]]:
    """`stats` of every whole window of `length_s` in `phases`, back to back from each
    phase's start: how much the same figures move from window to window with no
    maintenance at all."""
    found = []
    for phase in phases:
        start = phase.began
        while start + length_s <= phase.ended:
            found.append(stats(phase, batch, (start, start + length_s)))
            start += length_s
    return found


def against_quiet(window: dict[str, Any], quiet: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a window's drain rate and probe latencies fall among the quiet windows': their
    median, range, the window over the median, and the share of quiet windows whose figure
    is strictly lower (for a latency 1.0 means slower than every quiet window; for the rate
    0.0 means none was slower, so it is as slow as the slowest or slower). Ties count as
    not lower: the drain's rate in a window moves in steps of a batch, so they happen."""
    placed: dict[str, Any] = {}
    for name in ("deliveries_per_s", "probe_p50_ms", "probe_p99_ms"):
        values = sorted(q[name] for q in quiet if name in q)
        if not values or name not in window:
            continue
        value, median = window[name], statistics.median(values)
        placed[name] = {
            "window": value, "quiet_median": round(median, 1), "quiet_min": values[0],
            "quiet_max": values[-1], "over_median": round(value / median, 2) if median else None,
            "quiet_below": round(sum(v < value for v in values) / len(values), 2),
        }  # fmt: skip
    return placed


def middle(phase: Phase, length_s: float) -> tuple[float, float]:
    """A window of `length_s` in the middle of `phase`."""
    centre = (phase.began + phase.ended) / 2
    return centre - length_s / 2, centre + length_s / 2
