"""Real services for integration tests: skip locally when one is absent, fail in CI."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

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


RABBITMQ_HOST = os.environ.get("HOOKLINE_TEST_RABBITMQ_HOST", "127.0.0.1")
RABBITMQ_PORT = 5672
RABBITMQ_USER = RABBITMQ_PASSWORD = "guest"


def rabbitmq_available() -> bool:
    return port_open(RABBITMQ_HOST, RABBITMQ_PORT)


def require_rabbitmq() -> None:
    require(f"RabbitMQ on {RABBITMQ_HOST}:{RABBITMQ_PORT}", rabbitmq_available())


def _rabbitmqctl(*args: str) -> None:
    import subprocess

    subprocess.run(["rabbitmqctl", "--quiet", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def temporary_vhost(prefix: str = "hookline_test") -> Iterator[str]:
    """A fresh vhost for the guest user, so tests never see another run's queues; deleted
    afterwards. Yields its amqp:// URL."""
    require_rabbitmq()
    vhost = f"{prefix}_{secrets.token_hex(4)}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, RABBITMQ_USER, ".*", ".*", ".*")
        url = f"amqp://{RABBITMQ_USER}:{RABBITMQ_PASSWORD}@{RABBITMQ_HOST}:{RABBITMQ_PORT}"
        yield f"{url}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def migrated_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The body of a fixture parametrized "sqlite"/"postgres": a migrated database's URL,
    the PostgreSQL one (the session's `migrated_postgres`) emptied after the test."""
    from sqlalchemy import text

    from common.db import migrate
    from common.db.models import Base
    from common.db.session import make_engine

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/hookline.db"
        migrate.upgrade(url)
        yield url
        return
    url = request.getfixturevalue("migrated_postgres")
    yield url
    engine = make_engine(url)
    with engine.begin() as connection:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()
