"""Real services for integration tests: skip locally when one is absent, fail in CI."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator

import pytest

PG_ADMIN_URL = os.environ.get("HOOKLINE_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def require(name: str, available: bool) -> None:
    """Skip the test when a service is missing, except in CI, where that is a failure."""
    if available:
        return
    message = f"{name} is not reachable on this machine"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: integration tests must run)")
    pytest.skip(message)


@contextlib.contextmanager
def temporary_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test session, dropped afterwards."""
    import psycopg

    require("PostgreSQL", port_open("127.0.0.1", 5432))
    name = f"hookline_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
