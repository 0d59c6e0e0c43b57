"""One base for the services' long-running helper threads: start, stop, and a failure
that the owner reads instead of a thread dying in silence.

A subclass writes `run()`: it loops until `stopping` is set (or returns on its own), and
any exception it raises is kept as `failure` for the owning session to re-raise.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT_S = 10.0


class BackgroundThread:
    """A daemon thread with a stop flag and a recorded failure."""

    def __init__(self, name: str) -> None:
        self.stopping = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    @property
    def name(self) -> str:
        return self._thread.name

    @property
    def failure(self) -> BaseException | None:
        """The error that ended the thread's work, if any; its owner must act on it."""
        return self._failure

    def fail(self, exc: BaseException) -> None:
        """Record a failure (the first one wins); `run` should then return."""
        if self._failure is None:
            self._failure = exc

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float | None = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Ask the thread to finish, and wait up to `timeout_s` for it (None: do not wait)."""
        self.stopping.set()
        if timeout_s is not None and self._thread.is_alive():
            self._thread.join(timeout_s)

    def run(self) -> None:
        raise NotImplementedError

    def _main(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            log.warning("%s stopped on an error", self.name, exc_info=True)
            self.fail(exc)
