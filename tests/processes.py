"""Hookline services as real processes, for integration tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

HOOKLINE = [sys.executable, "-m", "hookline"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(database_url: str, broker_url: str, **settings: str) -> dict[str, str]:
    """The environment of services on these stores, for tests on 127.0.0.1: private and
    plain-http receivers allowed, subscriptions seen within 0.2 s, JSON logs; `settings`
    as `HOOKLINE_<NAME>` (upper-cased) on top."""
    env = {
        **os.environ,
        "HOOKLINE_DATABASE_URL": database_url,
        "HOOKLINE_BROKER_URL": broker_url,
        "HOOKLINE_ALLOW_PRIVATE_TARGETS": "true",
        "HOOKLINE_ALLOW_HTTP": "true",
        "HOOKLINE_SUBSCRIPTION_REFRESH_S": "0.2",
        "HOOKLINE_LOG_FORMAT": "json",
    }
    env.update({f"HOOKLINE_{name.upper()}": value for name, value in settings.items()})
    return env


class Services:
    """`hookline` processes sharing one environment, each logging to its own file."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        # One process per service unless a test asks for more (the default is one per core).
        self.env = {"HOOKLINE_PROCESSES": "1", **env}
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        with open(self.logs / f"{name}.log", "wb") as output:  # the child keeps its own fd
            self.procs[name] = subprocess.Popen(
                [*HOOKLINE, *args], env=self.env, stdout=output, stderr=subprocess.STDOUT
            )

    def log(self, name: str, tail: int = 6000) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-tail:]

    def logs_of_all(self) -> str:
        return "\n".join(f"{name}:\n{self.log(name)}" for name in self.procs)

    def alive(self) -> dict[str, int | None]:
        """Each process's exit code, or None while it runs."""
        return {name: proc.poll() for name, proc in self.procs.items()}

    def stop(self, timeout_s: float = 60) -> dict[str, int | None]:
        """SIGTERM everything, wait for the drains; None for a process that had to be killed."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                codes[name] = None
        return codes

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
