"""The API's readiness checks, on threads of their own.

`/readyz` must answer within seconds whatever the dependencies do, and must not wait for a
thread that tenants' requests hold. So each check (the database answers; the broker
answers, its topology declared) runs on this probe's own thread, one run at a time: a
probe that finds a check running waits for that run (at most `timeout_s`), and a result
younger than `fresh_s` is answered again without checking. A hung dependency holds one
thread, never more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)

FRESH_S = 1.0
TIMEOUT_S = 2.0

Check = Callable[[], None]


@dataclass
class _Run:
    future: Future[None]
    finished_at: float = 0.0


class ReadyProbe:
    def __init__(
        self, checks: Mapping[str, Check], *, fresh_s: float = FRESH_S, timeout_s: float = TIMEOUT_S
    ) -> None:
        self._checks = dict(checks)
        self._fresh_s = fresh_s
        self._timeout_s = timeout_s
        self._runs: dict[str, _Run] = {}
        self._executor = ThreadPoolExecutor(len(self._checks), thread_name_prefix="readyz")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def problems(self) -> list[str]:
        """What is not ready (empty: ready)."""
        runs = {name: self._current(name) for name in self._checks}
        running = [run.future for run in runs.values() if not run.future.done()]
        pending = [asyncio.wrap_future(future) for future in running]
        for waiter in pending:
            # The check's outcome is read from its own future below; a check still running
            # past the timeout fails into this wrapper later, which asyncio would report as
            # an ERROR ("exception was never retrieved") on every probe while a broker hangs.
            waiter.add_done_callback(_retrieved)
        if pending:
            await asyncio.wait(pending, timeout=self._timeout_s)
        problems = []
        for name, run in runs.items():
            if not run.future.done():
                problems.append(f"{name} unreachable (no answer within {self._timeout_s:g} s)")
                continue
            # A probe must answer "not ready", whatever the failure: any exception counts.
            error = run.future.exception()
            if error is not None:
                failed = {"check": name, "error": type(error).__name__}
                log.warning("readiness check failed", extra=failed)
                problems.append(f"{name} unreachable")
        return problems

    def _current(self, name: str) -> _Run:
        run = self._runs.get(name)
        now = time.monotonic()
        if run is not None and (not run.future.done() or now - run.finished_at < self._fresh_s):
            return run
        fresh = _Run(self._executor.submit(self._checks[name]))

        def finished(_: Future[None]) -> None:
            fresh.finished_at = time.monotonic()

        fresh.future.add_done_callback(finished)
        self._runs[name] = fresh
        return fresh


def _retrieved(waiter: asyncio.Future[None]) -> None:
    if not waiter.cancelled():
        waiter.exception()
