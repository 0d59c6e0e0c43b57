"""`LoopWindow`: publishing from an event loop, with as few thread wake-ups as possible.

A request on the loop hands its messages over and awaits the confirm on the loop, holding
no thread. Two kinds of wake-up would otherwise come per request: the loop waking the
transport's I/O thread, and that thread waking the loop for the confirm. On a busy process
both cost more than the publish (each is a syscall that gives the GIL away), so:
- what the loop hands over during one iteration goes to the transport in one `submit_many`;
- confirms settled together (one ack frame with `multiple` covers many requests) wake the
  loop once, and it settles every waiter on that one wake-up.
Each request still has its own batch: one request's failure is not another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from common.transport import Outgoing, Transport

_Waiter = asyncio.Future[None]


class LoopWindow:
    """Publishes for the coroutines of one event loop; create and call it on that loop."""

    def __init__(self, transport: Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._outgoing: list[tuple[Sequence[Outgoing], _Waiter]] = []  # loop thread only
        self._lock = threading.Lock()
        self._settled: list[tuple[_Waiter, BaseException | None]] = []  # under _lock
        self._wake_pending = False  # under _lock

    def serves(self, loop: asyncio.AbstractEventLoop) -> bool:
        return loop is self._loop

    def publish(self, messages: Sequence[Outgoing], timeout_s: float) -> _Waiter:
        """A future on the loop that ends as `Transport.publish` would for `messages`."""
        waiter: _Waiter = self._loop.create_future()
        if not self._outgoing:
            self._loop.call_soon(self._flush, timeout_s)
        self._outgoing.append((messages, waiter))
        return waiter

    def _flush(self, timeout_s: float) -> None:
        outgoing, self._outgoing = self._outgoing, []
        try:
            futures = self._transport.submit_many([m for m, _ in outgoing], timeout_s=timeout_s)
        except Exception as exc:  # nothing was handed over: every waiter hears why
            for _, waiter in outgoing:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for (_, waiter), future in zip(outgoing, futures, strict=True):
            future.add_done_callback(functools.partial(self._on_settled, waiter))

    def _on_settled(self, waiter: _Waiter, future: Future[None]) -> None:
        """Runs on whichever thread settled `future` (the transport's I/O thread)."""
        error = future.exception()
        with self._lock:
            self._settled.append((waiter, error))
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            settled, self._settled = self._settled, []
            self._wake_pending = False
        for waiter, error in settled:
            if waiter.done():  # its caller gave up waiting (timeout, disconnect)
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
