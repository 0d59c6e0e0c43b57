"""The per-tenant ingest limit's own cost: microseconds per `admit_events` call on the path
every accepted request takes (the tenant's limits cached, units in this process's lease).

    .venv/bin/python -m bench.ingest_limit [--calls 100000] [--runs 5]

One SQLite database in a temporary directory, one tenant whose rate (1,000,000/s) this
loop never reaches, so the database is asked once per chunk (50,000 events). Beside it, in
the same run, the same loop awaiting a coroutine that does nothing: the loop's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from sqlalchemy import insert

from common.db.migrate import upgrade
from common.db.models import Tenant
from common.db.session import make_engine, make_sessionmaker
from common.settings import Settings
from common.wire import utcnow
from hookline.api.deps import Services
from hookline.api.limitbook import LimitBook
from hookline.api.quota import Quota
from hookline.api.tenant_limits import admit_events

Admit = Callable[[Services, str, int], Awaitable[None]]


async def _nothing(services: Services, tenant_id: str, count: int) -> None:
    return None


async def per_call_us(admit: Admit, services: Services, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await admit(services, "ten_bench", 1)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_limit", description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        url = f"sqlite:///{workdir}/hookline.db"
        upgrade(url)
        sessions = make_sessionmaker(make_engine(url))
        with sessions() as session, session.begin():
            session.execute(insert(Tenant).values(id="ten_bench", name="b", created_at=utcnow()))
        settings = Settings(database_url=url, tenant_ingest_rate_per_s=1_000_000)
        fake: Any = type("S", (), {})()
        fake.limits, fake.quota = LimitBook(sessions, settings), Quota(sessions)
        services = cast(Services, fake)

        async def measure() -> list[dict[str, float]]:
            await per_call_us(admit_events, services, args.calls)  # warm-up
            results = []
            for _ in range(args.runs):
                limit = await per_call_us(admit_events, services, args.calls)
                nothing = await per_call_us(_nothing, services, args.calls)
                results.append({"admit_us": round(limit, 3), "empty_us": round(nothing, 3)})
                print(json.dumps(results[-1]), flush=True)
            return results

        results = asyncio.run(measure())
    median = {key: statistics.median(r[key] for r in results) for key in results[0]}
    print(json.dumps({"median": median}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
