"""`--processes N`: one supervisor keeps N copies of a service running, as child processes.

Python runs one thread of bytecode at a time, so a dispatcher or router on a many-core
host uses one core however many threads it has; N processes use N. The supervisor is a
plain parent: it starts each child as `python -m hookline <command> --processes 1 ...`
(a fresh interpreter: no fork of a threaded process, no pika or database connection
inherited), and does nothing else.

- A child that exits while the supervisor is not stopping is restarted, after a backoff
  that grows while it keeps failing (0.5 s, 1 s, 2 s ... 10 s) and starts again from the
  first wait once a child ran `STABLE_AFTER_S`.
- A child that exits more than `CRASH_LIMIT` times in a row, each time within
  `STABLE_AFTER_S` of its start (a few seconds of backoff), or that exits
  with the configuration status (2: a setting is wrong, restarting cannot fix it): the
  supervisor drains the others and exits non-zero with one line saying why, so that the
  orchestrator (Kubernetes, compose, systemd) sees a crash loop, not a process that looks
  alive while doing nothing.
- SIGTERM or SIGINT is forwarded to every child, which drains (stops taking messages,
  finishes and settles what it holds) and exits 0; the supervisor then exits 0. A second
  signal is forwarded too: the children exit at once, as a single process does.
- Children run in their own process group, so a terminal's Ctrl-C reaches only the
  supervisor (a child hit twice would skip its drain); each child watches its parent and
  drains if the supervisor disappears (`watch_parent`).

The CLI validates the options, then replaces itself with `python -m hookline.supervisor`
(`exec_supervisor`: same pid, so signals and the exit status still go to the right
place): the parsed CLI holds ~90 MiB of imports that a parent has no use for; this
module alone is ~14 MiB.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NoReturn

from common import logs
from common.errors import ConfigurationError, HooklineError

log = logging.getLogger(__name__)

RESTART_FIRST_WAIT_S = 0.5
RESTART_MAX_WAIT_S = 10.0
STABLE_AFTER_S = 30.0
CRASH_LIMIT = 3  # more short-lived runs in a row than this: a crash loop
# A child's own drain is bounded (25-30 s with the default timeouts); past this it is killed.
DRAIN_TIMEOUT_S = 60.0
POLL_S = 0.2
PARENT_CHECK_S = 1.0
CONFIGURATION_EXIT = 2


class CrashLoopError(HooklineError):
    """Children kept exiting: the supervisor gave up."""


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 quota (a
    container limited to 2 CPUs on a 64-core node must not start 64 children)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def watch_parent(stop: threading.Event) -> None:
    """In a child: drain (set `stop`) once the supervisor that started it is gone."""
    parent = os.getppid()

    def watch() -> None:
        while not stop.wait(PARENT_CHECK_S):
            if os.getppid() != parent:
                log.warning("supervisor gone: draining")
                stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def child_argvs(
    command: str, count: int, *, metrics_port: int | None, args: Sequence[str] = ()
) -> list[list[str]]:
    """The command line of each child: one process, its index, and its own metrics port
    (`metrics_port` + index: each child serves its own /metrics, /healthz and /readyz)."""
    argvs = []
    for index in range(count):
        argv = [command, "--processes", "1", "--child-index", str(index), *args]
        if metrics_port:
            argv += ["--metrics-port", str(metrics_port + index)]
        argvs.append(argv)
    return argvs


def restart_delay_s(failures: int) -> float:
    """The wait before restarting a child that failed `failures` times in a row (from 1)."""
    return min(RESTART_MAX_WAIT_S, RESTART_FIRST_WAIT_S * 2.0 ** min(failures - 1, 30))


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which forwards.
    return subprocess.Popen([sys.executable, "-m", "hookline", *argv], process_group=0)


@dataclass
class _Child:
    index: int
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0  # exits in a row, each after less than STABLE_AFTER_S
    restart_at: float = 0.0
    signalled: int = 0  # signals forwarded to this process


@dataclass
class Supervisor:
    """Keeps `len(argvs)` children running (child i runs `argvs[i]`) until a signal."""

    name: str
    argvs: Sequence[list[str]]
    crash_limit: int = CRASH_LIMIT
    spawn: Callable[[list[str]], subprocess.Popen[bytes]] = field(default=_spawn)
    _children: list[_Child] = field(init=False)
    _signals: int = field(init=False, default=0)
    _wake: threading.Event = field(init=False, default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._children = [_Child(i, list(argv)) for i, argv in enumerate(self.argvs)]

    def run(self) -> int:
        """Supervise until stopped: 0 when every child drained cleanly, else 1. Raises
        `CrashLoopError` (or `ConfigurationError`) after draining the others."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for child in self._children:
            self._start(child)
        log.info("supervisor started", extra={"service": self.name,
                                              "processes": len(self._children)})  # fmt: skip
        while not self._signals:
            now = time.monotonic()
            for child in self._children:
                if child.proc is None:
                    if now >= child.restart_at and not self._signals:
                        self._start(child)
                elif (code := child.proc.poll()) is not None:
                    self._exited(child, code, now)
            self._wake.wait(POLL_S)
        return self._drain()

    def _start(self, child: _Child) -> None:
        child.proc = self.spawn(child.argv)
        child.started_at = time.monotonic()
        child.signalled = 0
        log.info("child started", extra={"service": self.name, "child": child.index,
                                         "pid": child.proc.pid})  # fmt: skip

    def _exited(self, child: _Child, code: int, now: float) -> None:
        child.proc = None
        ran_s = now - child.started_at
        child.failures = 1 if ran_s >= STABLE_AFTER_S else child.failures + 1
        what = f"{self.name} process {child.index} exited with status {_status(code)}"
        if code == CONFIGURATION_EXIT:
            self._give_up(ConfigurationError(f"{what} (a configuration error); not restarting"))
        if child.failures > self.crash_limit:
            self._give_up(CrashLoopError(
                f"{what}, its {child.failures}th exit in a row within {STABLE_AFTER_S:g} s "
                "of its start: giving up (its output above says why)"
            ))  # fmt: skip
        delay_s = restart_delay_s(child.failures)
        child.restart_at = now + delay_s
        log.warning(what + "; restarting", extra={"after_s": round(ran_s, 1),
                                                  "delay_s": delay_s})  # fmt: skip

    def _give_up(self, error: HooklineError) -> None:
        log.error(str(error))
        self._signals = max(self._signals, 1)
        self._forward()
        self._wait_all()
        raise error

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("signal received: children draining (send it again to exit at once)")
        self._forward()
        self._wake.set()

    def _forward(self) -> None:
        """Bring every running child up to as many SIGTERMs as the supervisor received: one
        drains, two end it at once (a child started meanwhile gets its share too)."""
        for child in self._children:
            while child.proc is not None and child.signalled < self._signals:
                child.signalled += 1
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)

    def _drain(self) -> int:
        self._forward()  # a child started while the signal was being handled
        codes = self._wait_all()
        # A child that a signal found still starting up ends by it: it held no message.
        clean = all(code in (0, -signal.SIGTERM) for code in codes)
        log.info("supervisor stopped", extra={"service": self.name, "codes": codes})
        return 0 if clean else 1

    def _wait_all(self) -> list[int]:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        codes = []
        for child in self._children:
            if child.proc is None:
                continue
            try:
                codes.append(child.proc.wait(max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                log.error("child did not drain in time: killed", extra={"child": child.index})
                child.proc.kill()
                codes.append(child.proc.wait())
        return codes


def _status(code: int) -> str:
    if code >= 0:
        return str(code)
    try:
        return f"{code} (killed by {signal.Signals(-code).name})"
    except ValueError:
        return str(code)


def exec_supervisor(
    command: str, argvs: Sequence[list[str]], *, log_format: str, log_level: str
) -> NoReturn:
    """Become the supervisor of `argvs` (this process's pid, a fresh small interpreter)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "hookline.supervisor", command,
                              log_format, log_level, json.dumps(list(argvs))])  # fmt: skip


def main(argv: Sequence[str]) -> int:
    command, log_format, log_level, argvs = argv[0], argv[1], argv[2], json.loads(argv[3])
    logs.configure(log_format, log_level)
    try:
        return Supervisor(command, argvs).run()
    except HooklineError as exc:  # one line, as the `hookline` command ends on its errors
        print(f"hookline: {exc}", file=sys.stderr)
        return CONFIGURATION_EXIT if isinstance(exc, ConfigurationError) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
