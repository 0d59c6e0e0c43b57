import threading

from common.background import BackgroundThread


class _Ticker(BackgroundThread):
    def __init__(self) -> None:
        super().__init__("ticker")
        self.ticks = 0

    def run(self) -> None:
        while not self.stopping.wait(0.01):
            self.ticks += 1


class _Crasher(BackgroundThread):
    def __init__(self, done: threading.Event) -> None:
        super().__init__("crasher")
        self._done = done

    def run(self) -> None:
        try:
            raise ValueError("boom")
        finally:
            self._done.set()


def test_background_thread_runs_until_stopped_and_joins() -> None:
    ticker = _Ticker()
    ticker.start()
    while ticker.ticks < 2:
        threading.Event().wait(0.01)
    ticker.stop()
    assert not ticker.is_alive()
    assert ticker.failure is None
    assert ticker.name == "ticker"


def test_background_thread_keeps_the_error_that_ended_it() -> None:
    done = threading.Event()
    crasher = _Crasher(done)
    crasher.start()
    assert done.wait(5)
    crasher.stop()
    assert isinstance(crasher.failure, ValueError)


def test_the_first_failure_wins() -> None:
    thread = _Ticker()
    thread.fail(KeyError("first"))
    thread.fail(ValueError("second"))
    assert isinstance(thread.failure, KeyError)
