"""The retention benchmark's comparison of the drop's window with windows of the quiet
phases (how much a short window's figures move with no maintenance at all)."""

from bench.phases import Phase, against_quiet, quiet_windows, stats


def _phase(began: float, latencies: list[float]) -> Phase:
    """A 10 s phase with one drain batch and one probe every 0.1 s."""
    phase = Phase(began, began + 10.0)
    for n, ms in enumerate(latencies):
        at = began + 0.05 + n * 0.1
        phase.batches.append((at, 4.0))
        phase.probes.append((at, ms))
    return phase


def test_the_quiet_phases_are_cut_into_whole_windows_of_the_length_asked() -> None:
    a1 = _phase(0.0, [1.0] * 100)
    a2 = _phase(100.0, [1.0] * 100)
    windows = quiet_windows([a1, a2], 2.0, batch=10)
    assert len(windows) == 10  # 5 a phase; no partial window at either end
    assert {w["deliveries_per_s"] for w in windows} == {100}  # 20 batches of 10 in 2 s
    assert len(quiet_windows([a1], 3.0, batch=10)) == 3  # 9 s in whole windows, not 10


def test_a_window_is_placed_among_the_quiet_ones() -> None:
    # Of 20 probes the p99 is the second slowest: two slow ones in each quiet window make
    # their p99s 2.0, 4.0, 6.0, 8.0, 10.0.
    latencies = [1.0] * 100
    for window, slow in enumerate((2.0, 4.0, 6.0, 8.0, 10.0)):
        latencies[window * 20 + 7] = latencies[window * 20 + 8] = slow
    quiet = quiet_windows([_phase(0.0, latencies)], 2.0, batch=10)
    assert sorted(w["probe_p99_ms"] for w in quiet) == [2.0, 4.0, 6.0, 8.0, 10.0]

    drop = _phase(50.0, [1.0] * 18 + [7.0, 7.0] + [1.0] * 80)
    placed = against_quiet(stats(drop, 10, (50.0, 52.0)), quiet)
    p99 = placed["probe_p99_ms"]
    assert (p99["window"], p99["quiet_median"], p99["quiet_min"], p99["quiet_max"]) == (
        7.0, 6.0, 2.0, 10.0)  # fmt: skip
    assert p99["over_median"] == 1.17
    assert p99["quiet_below"] == 0.6  # slower than three of the five quiet windows
    assert placed["probe_p50_ms"]["over_median"] == 1.0
    assert placed["deliveries_per_s"]["quiet_below"] == 0.0  # as quick as all, none lower


def test_a_figure_no_quiet_window_has_is_left_out() -> None:
    quiet = [{"deliveries_per_s": 100}]
    assert set(against_quiet({"deliveries_per_s": 90, "probe_p99_ms": 5.0}, quiet)) == {
        "deliveries_per_s"}  # fmt: skip
