"""Who runs a replay job: a lease with a heartbeat, and a holder id a successor can check.

A job is run by one process at a time. A runner's heartbeat older than the lease frees the
job for another; on the same host, a holder whose process no longer exists (kill -9) frees
it at once, so `hookline replay start --resume` does not have to wait the lease out.
"""

from __future__ import annotations

import os
import socket

from common.wire import new_id


def runner_id() -> str:
    """`host:pid:random`, so a runner on the same host can tell that a holder was killed."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{new_id('run')[-8:]}"


def on_this_host(holder: str) -> bool:
    return holder.partition(":")[0] == socket.gethostname()[:30]


def runner_gone(holder: str) -> bool:
    """Whether `holder` ran on this host in a process that no longer exists."""
    pid_text = holder.partition(":")[2].partition(":")[0]
    if not on_this_host(holder) or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class JobBusy(Exception):
    """Another runner holds the job (its heartbeat is fresh), or the job is finished."""


class LeaseLost(JobBusy):
    """Another runner took the job over while this one ran (its heartbeat had lapsed)."""
