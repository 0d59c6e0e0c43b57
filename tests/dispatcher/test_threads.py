"""The sending threads take jobs round-robin over their lanes (the delivery shards), so a
backlog queued for one shard cannot hold another shard's job behind it."""

from __future__ import annotations

import functools
import threading

from dispatcher.threads import SendingThreads


def _blocked_pool() -> tuple[SendingThreads, threading.Event]:
    """One thread, held busy until the returned event is set."""
    pool = SendingThreads(1, "test-send")
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(5)

    pool.submit(hold, "warm-up")
    assert started.wait(5)
    return pool, release


def test_a_lone_job_of_another_lane_runs_before_a_backlog_queued_ahead() -> None:
    pool, release = _blocked_pool()
    ran: list[str] = []
    done = threading.Event()
    for n in range(50):
        pool.submit(functools.partial(ran.append, f"a{n}"), "shard-a")
    pool.submit(lambda: ran.append("b"), "shard-b")
    pool.submit(done.set, "shard-c")
    assert pool.waiting() == {"shard-a": 50, "shard-b": 1, "shard-c": 1}

    release.set()

    assert done.wait(5)
    assert ran[:2] == ["a0", "b"]  # b waited for one job of a, not fifty
    pool.shutdown()


def test_lanes_take_turns_and_keep_their_own_order() -> None:
    pool, release = _blocked_pool()
    ran: list[str] = []
    finished = threading.Event()
    for n in range(3):
        pool.submit(functools.partial(ran.append, f"a{n}"), "a")
    for n in range(2):
        pool.submit(functools.partial(ran.append, f"b{n}"), "b")
    pool.submit(lambda: ran.append("c0"), "c")
    pool.submit(finished.set, "a")

    release.set()

    assert finished.wait(5)
    assert ran == ["a0", "b0", "c0", "a1", "b1", "a2"]
    pool.shutdown()


def test_jobs_queued_at_shutdown_are_dropped_and_submitting_after_fails() -> None:
    pool, release = _blocked_pool()
    ran: list[int] = []
    pool.submit(lambda: ran.append(1), "a")
    pool.shutdown()
    release.set()
    try:
        pool.submit(lambda: ran.append(2), "a")
    except RuntimeError:
        pass
    else:
        raise AssertionError("submit after shutdown must fail")
    assert pool.waiting() == {}
    for thread in pool._threads:  # the thread ends instead of running the queued job
        thread.join(5)
        assert not thread.is_alive()
    assert ran == []


def test_every_job_runs_once_however_many_threads_wait_and_shutdown_ends_them_all() -> None:
    """Many threads and submitters at once: each job taken by exactly one thread (one
    wake-up token per job), and the idle threads all end at shutdown."""
    pool = SendingThreads(8, "test-send")
    counts = [0] * 2000
    lock = threading.Lock()
    done = threading.Semaphore(0)

    def job(n: int) -> None:
        with lock:
            counts[n] += 1
        done.release()

    def submit(start: int) -> None:
        for n in range(start, 2000, 2):
            pool.submit(functools.partial(job, n), f"shard-{n % 5}")

    submitters = [threading.Thread(target=submit, args=(s,)) for s in (0, 1)]
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join(5)
    for _ in range(2000):
        assert done.acquire(timeout=5)
    assert counts == [1] * 2000 and pool.waiting() == {}
    pool.shutdown()
    for thread in pool._threads:
        thread.join(5)
        assert not thread.is_alive()
