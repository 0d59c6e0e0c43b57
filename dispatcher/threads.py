"""The sending threads: a fixed set of threads taking jobs from per-shard queues in turn.

What `ThreadPoolExecutor` does for the dispatcher, without what it does not need: no
`Future` (with its condition variable) per job and no bookkeeping per submit, which cost a
few percent of a dispatcher's CPU at a thousand deliveries a second. And what it cannot do:
each job names its lane (the delivery queue shard it came from), and a free thread takes
the next job of the next lane round-robin, so one shard's backlog queued here cannot hold a
job of another shard behind it (fair delivery, architecture §3).

A free thread sleeps on a C `SimpleQueue` of wake-up tokens (one per job), not on a Python
`Condition`: that one allocated a lock per wait and had every woken thread take the
condition's lock back, against the submitter and the other threads. In a drain the sending
threads switched a third less and spent an eighth less CPU (docs/benchmarks.md, session 12).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable

log = logging.getLogger(__name__)

Job = Callable[[], None]


class SendingThreads:
    def __init__(self, count: int, name: str) -> None:
        self._lock = threading.Lock()
        # One token per job submitted, put after the job (so a token always finds one);
        # None per thread at shutdown.
        self._tokens: queue.SimpleQueue[bool | None] = queue.SimpleQueue()
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
        with self._lock:
            if self._closed:
                raise RuntimeError("the sending threads are shut down")
            jobs = self._lanes.get(lane)
            if jobs is None:
                jobs = self._lanes[lane] = deque()
            jobs.append(job)
        self._tokens.put(True)

    def _next(self) -> Job | None:
        """The next lane's next job; None once shut down (queued jobs are dropped: their
        messages are redelivered when the consumer closes)."""
        if not self._tokens.get():
            return None
        with self._lock:
            if self._closed:
                return None
            lane, jobs = self._lanes.popitem(last=False)
            job = jobs.popleft()
            if jobs:
                self._lanes[lane] = jobs  # back of the line
            return job

    def waiting(self) -> dict[str, int]:
        """Jobs waiting for a thread, per lane (for tests and metrics)."""
        with self._lock:
            return {lane: len(jobs) for lane, jobs in self._lanes.items()}

    def shutdown(self) -> None:
        """Jobs still queued are dropped, running ones finish; returns without waiting."""
        with self._lock:
            self._closed = True
            self._lanes.clear()
        for _ in self._threads:
            self._tokens.put(None)

    def _run(self) -> None:
        while (job := self._next()) is not None:
            try:
                job()
            except Exception:  # a job's own errors are its business; the thread lives on
                log.exception("a sending job failed")
