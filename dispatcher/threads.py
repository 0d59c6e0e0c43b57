"""The sending threads: a fixed set of threads taking jobs from per-shard queues in turn.

What `ThreadPoolExecutor` does for the dispatcher, without what it does not need: no
`Future` (with its condition variable) per job and no bookkeeping per submit, which cost a
few percent of a dispatcher's CPU at a thousand deliveries a second. And what it cannot do:
each job names its lane (the delivery queue shard it came from), and a free thread takes
the next job of the next lane round-robin, so one shard's backlog queued here cannot hold a
job of another shard behind it (fair delivery, architecture §3).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable

log = logging.getLogger(__name__)

Job = Callable[[], None]


class SendingThreads:
    def __init__(self, count: int, name: str) -> None:
        self._cond = threading.Condition(threading.Lock())
        # Lanes with jobs waiting, in the order they are served; a served lane goes last.
        self._lanes: OrderedDict[str, deque[Job]] = OrderedDict()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job, lane: str = "") -> None:
        """Run `job` on the next free thread, in its lane's turn; `RuntimeError` once shut
        down."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the sending threads are shut down")
            jobs = self._lanes.get(lane)
            if jobs is None:
                jobs = self._lanes[lane] = deque()
            jobs.append(job)
            self._cond.notify()

    def _next(self) -> Job | None:
        """The next lane's next job; None once shut down (queued jobs are dropped: their
        messages are redelivered when the consumer closes)."""
        with self._cond:
            while not self._lanes and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            lane, jobs = self._lanes.popitem(last=False)
            job = jobs.popleft()
            if jobs:
                self._lanes[lane] = jobs  # back of the line
            return job

    def waiting(self) -> dict[str, int]:
        """Jobs waiting for a thread, per lane (for tests and metrics)."""
        with self._cond:
            return {lane: len(jobs) for lane, jobs in self._lanes.items()}

    def shutdown(self) -> None:
        """Jobs still queued are dropped, running ones finish; returns without waiting."""
        with self._cond:
            self._closed = True
            self._lanes.clear()
            self._cond.notify_all()

    def _run(self) -> None:
        while (job := self._next()) is not None:
            try:
                job()
            except Exception:  # a job's own errors are its business; the thread lives on
                log.exception("a sending job failed")
