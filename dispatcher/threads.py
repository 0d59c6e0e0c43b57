"""The sending threads: a fixed set of threads taking jobs from one queue.

What `ThreadPoolExecutor` does for the dispatcher, without what it does not need: no
`Future` (with its condition variable) per job and no bookkeeping per submit, which cost a
few percent of a dispatcher's CPU at a thousand deliveries a second.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Job = Callable[[], None]


class SendingThreads:
    def __init__(self, count: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        """Run `job` on the next free thread; `RuntimeError` once shut down."""
        if self._closed:
            raise RuntimeError("the sending threads are shut down")
        self._jobs.put(job)

    def shutdown(self) -> None:
        """Jobs still queued are dropped, running ones finish; returns without waiting."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._closed:
                continue  # dropped: its message is redelivered when the consumer closes
            try:
                job()
            except Exception:  # a job's own errors are its business; the thread lives on
                log.exception("a sending job failed")
