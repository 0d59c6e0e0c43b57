"""The metrics contract: names, units, bounded labels, pre-created series, bucket ranges."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import Metrics
from common.settings import DEFAULT_RETRY_SCHEDULE, parse_schedule

ROOT = Path(__file__).resolve().parents[2]
# Labels that stay bounded whatever the traffic; never tenant, endpoint, URL or an id.
ALLOWED_LABELS = {"result", "origin", "outcome", "status_class", "reason", "version", "le",
                  "queue", "status", "source", "mode", "route", "method"}  # fmt: skip
# Exported by the backlog collector (common/backlog.py), not by every process.
BACKLOG_METRICS = {"hookline_queue_messages", "hookline_oldest_due_delivery_age_seconds",
                   "hookline_subscriptions", "hookline_backlog_up"}  # fmt: skip


def families(metrics: Metrics) -> dict[str, object]:
    text = generate_latest(metrics.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def section_10_names() -> set[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## 10. Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(hookline_[a-z0-9_]+)", section))


def test_every_metric_is_prefixed_and_counters_end_in_total() -> None:
    text = generate_latest(Metrics().registry).decode()
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("hookline_"), family.name
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name
            assert set(sample.labels) <= ALLOWED_LABELS, (sample.name, sample.labels)


def test_every_label_combination_exists_at_zero_before_any_traffic() -> None:
    text = generate_latest(Metrics().registry).decode()
    for family in text_string_to_metric_families(text):
        if family.type in ("counter", "histogram"):
            assert family.samples, f"{family.name} has no series before traffic"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip
    assert samples[("hookline_deliveries_finished_total", (("result", "dead"),))] == 0
    assert samples[("hookline_dead_letters_total", (("reason", "max_attempts"),))] == 0
    assert samples[("hookline_replay_messages_total", (("result", "published"),))] == 0
    assert samples[("hookline_subscriptions_disabled_total", (("reason", "failing"),))] == 0
    assert samples[("hookline_build_info", (("version", __import__("common").__version__),))] == 1


def test_every_name_in_section_10_is_exported() -> None:
    exported = set(families(Metrics())) | BACKLOG_METRICS
    exported |= {name + "_total" for name in exported}  # the parser strips `_total`
    missing = section_10_names() - exported
    assert not missing, f"section 10 names metrics nobody exports: {missing}"


@pytest.mark.parametrize("timeout_s", [15.0, 60.0, 300.0])
def test_attempt_buckets_reach_past_the_request_timeout(timeout_s: float) -> None:
    metrics = Metrics(request_timeout_s=timeout_s)
    upper = [float(s.labels["le"]) for s in families(metrics)[
        "hookline_delivery_attempt_duration_seconds"].samples  # type: ignore[attr-defined]
        if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"]  # fmt: skip
    assert max(upper) > timeout_s


@pytest.mark.parametrize("schedule", [DEFAULT_RETRY_SCHEDULE, "1d,1d,1d"])
def test_e2e_buckets_cover_the_whole_retry_schedule(schedule: str) -> None:
    delays = parse_schedule(schedule)
    metrics = Metrics(retry_delays_s=delays)
    upper = [float(s.labels["le"]) for s in families(metrics)[
        "hookline_delivery_e2e_seconds"].samples  # type: ignore[attr-defined]
        if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"]  # fmt: skip
    assert max(upper) > sum(delays)
    assert min(upper) <= 0.01
