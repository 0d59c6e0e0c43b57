"""`python -m bench.ingest --catalogue`: ingest with and without the event-type catalogue's
check (issue 16), in the same run, against the same API process.

Two tenants publish the same realistic order events (nested customer, a list of items):
`plain` has no catalogue (schema validation `off`, the default); `checked` catalogued
`order.created` with a realistic JSON Schema (required fields, types, enums, bounds, a
nested object, an array of objects, `additionalProperties: false`) and set `reject`, so
every one of its events is validated. Per run: single events per request, then batches,
each measured for both tenants in `--slices` interleaved slices (ABBA, the tenant that goes
first alternating from run to run), so that neither gains from its place or from a quiet
moment: on this shared machine one of two back-to-back phases ran up to 30 % faster.
Besides events/s (wall clock: what a neighbour on the shared machine blurs most), each
phase records the API process's own CPU time per event (`*_cpu_us_per_event`, from
/proc), which a neighbour changes far less; `*_cpu_ratio_checked_to_plain` ≤ 1.10 is the
target read the same way. `check_us_per_event` times the check itself in this process
(the compiled schema on one event's data, the median of five rounds of 20,000), the part
of the cost that no neighbour can blur. The ratio checked ÷ plain of events/s is the cost
of the check; the target is ≥ 0.90. At the end, one event that breaks the schema must be
refused (422), so the check was really on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import requests

from bench.ingest import ADMIN, SECRET_KEY, _request, _wait, load
from hookline.services import event_schemas
from tests.processes import Services, free_port
from tests.services import temporary_database, temporary_vhost

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["order", "total", "currency", "customer", "items"],
    "additionalProperties": False,
    "properties": {
        "order": {"type": "integer", "minimum": 0},
        "total": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
        "customer": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "string", "maxLength": 64},
                "tier": {"type": "string", "enum": ["free", "pro", "gold"]},
                "email": {"type": "string", "maxLength": 254, "pattern": "^[^@ ]+@[^@ ]+$"},
            },
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z0-9-]{3,32}$"},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "number"},
                },
            },
        },
        "coupon": {"type": ["string", "null"]},
    },
}


def _data(n: int) -> dict[str, Any]:
    return {
        "order": n, "total": 10.5, "currency": "EUR",
        "customer": {"id": f"cus-{n % 997}", "tier": "pro", "email": "buyer@example.com"},
        "items": [{"sku": "SKU-123", "qty": 1, "price": 4.5},
                  {"sku": "SKU-9", "qty": 2, "price": 3}],
        "coupon": None,
    }  # fmt: skip


def _single(n: int) -> bytes:
    return json.dumps({"type": "order.created", "data": _data(n)}).encode()


def _batch(n: int, size: int) -> bytes:
    events = [{"type": "order.created", "data": _data(n * size + i)} for i in range(size)]
    return json.dumps({"events": events}).encode()


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _check_us(repeats: int = 20_000) -> float:
    """µs the compiled schema takes to accept one event's data, in this process."""
    validator = event_schemas.compile_schema(SCHEMA)
    data = _data(7)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            validator.is_valid(data)
        timings.append((time.perf_counter() - started) / repeats * 1e6)
    return round(statistics.median(timings), 2)


def _tenant(base: str, name: str) -> tuple[str, str]:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    body = requests.post(f"{base}/v1/tenants", json={"name": name}, headers=admin, timeout=10)
    return body.json()["id"], body.json()["api_key"]


def _catalogue(base: str, tenant_id: str, key: str) -> None:
    entry = {"name": "order.created", "group": "orders", "data_schema": SCHEMA,
             "examples": [_data(1)]}  # fmt: skip
    created = requests.post(f"{base}/v1/event-types", json=entry, timeout=10,
                            headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    created.raise_for_status()
    settings = requests.patch(
        f"{base}/v1/tenants/{tenant_id}/settings", json={"schema_validation": "reject"},
        headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10,
    )  # fmt: skip
    settings.raise_for_status()


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, float]:
    with temporary_vhost("hookline_bench") as broker_url, temporary_database() as database_url:
        port = free_port()
        env = {
            **os.environ, "HOOKLINE_DATABASE_URL": database_url,
            "HOOKLINE_BROKER_URL": broker_url, "HOOKLINE_SECRET_KEY": SECRET_KEY,
            "HOOKLINE_ADMIN_TOKEN": ADMIN, "HOOKLINE_LOG_LEVEL": "WARNING",
        }  # fmt: skip
        logs = workdir / f"run{number}"
        logs.mkdir()
        services = Services(env, logs)
        services.start("migrate", "migrate")
        services.procs.pop("migrate").wait(60)
        services.start("api", "api", "--port", str(port))
        try:
            base = f"http://127.0.0.1:{port}"
            _wait(f"{base}/healthz")
            keys = {"plain": _tenant(base, "plain")[1]}
            checked_id, keys["checked"] = _tenant(base, "checked")
            _catalogue(base, checked_id, keys["checked"])
            order = ["plain", "checked"] if number % 2 == 0 else ["checked", "plain"]
            for name in order:  # warm both keys, pools and caches outside the timing
                load(port, [_request("POST", "/v1/events", keys[name], _single(-1))] * 200, 20, 1)
            seconds: dict[str, float] = {}
            cpu: dict[str, float] = {}  # the API process's CPU seconds, per phase and tenant
            api_pid = services.procs["api"].pid
            # Interleaved slices, ABBA within each pair of slices, so that a noisy neighbour
            # (this machine is shared) hits both tenants alike.
            slices = [*order, *reversed(order)] * (args.slices // 2)
            single_n = args.events // len(slices)
            for index, name in enumerate(slices):
                raws = [_request("POST", "/v1/events", keys[name], _single(index * single_n + n))
                        for n in range(single_n)]  # fmt: skip
                before = _cpu_s(api_pid)
                rate, _ = load(port, raws, args.connections, 1)
                cpu[f"single_{name}"] = cpu.get(f"single_{name}", 0.0) + _cpu_s(api_pid) - before
                seconds[f"single_{name}"] = seconds.get(f"single_{name}", 0.0) + single_n / rate
            batches = max(1, args.batch_events // args.batch // len(slices))
            for index, name in enumerate(slices):
                raws = [_request("POST", "/v1/events/batch", keys[name],
                                 _batch(index * batches + n, args.batch))
                        for n in range(batches)]  # fmt: skip
                before = _cpu_s(api_pid)
                rate, _ = load(port, raws, args.batch_connections, args.batch)
                cpu[f"batch_{name}"] = cpu.get(f"batch_{name}", 0.0) + _cpu_s(api_pid) - before
                events = batches * args.batch
                seconds[f"batch_{name}"] = seconds.get(f"batch_{name}", 0.0) + events / rate
            per_tenant = len(slices) // 2
            counts = {
                name: per_tenant * (single_n if name.startswith("single") else batches * args.batch)
                for name in seconds
            }
            rates = {name: counts[name] / elapsed for name, elapsed in seconds.items()}
            cpu_us = {f"{name}_cpu_us_per_event": round(cpu[name] / counts[name] * 1e6, 1)
                      for name in cpu}  # fmt: skip
            broken = {"type": "order.created", "data": {**_data(0), "currency": "XXX"}}
            auth = {"Authorization": f"Bearer {keys['checked']}"}
            refused = requests.post(f"{base}/v1/events", json=broken, headers=auth, timeout=10)
        finally:
            services.stop()
    return {
        **{name: round(rate) for name, rate in rates.items()},
        "check_us_per_event": _check_us(),
        **cpu_us,
        "single_cpu_ratio_checked_to_plain": round(
            cpu_us["single_checked_cpu_us_per_event"] / cpu_us["single_plain_cpu_us_per_event"], 3
        ),
        "batch_cpu_ratio_checked_to_plain": round(
            cpu_us["batch_checked_cpu_us_per_event"] / cpu_us["batch_plain_cpu_us_per_event"], 3
        ),
        "single_ratio_checked_to_plain": round(rates["single_checked"] / rates["single_plain"], 3),
        "batch_ratio_checked_to_plain": round(rates["batch_checked"] / rates["batch_plain"], 3),
        "checked_first": float(order[0] == "checked"),
        "broken_event_refused": float(refused.status_code == 422),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
