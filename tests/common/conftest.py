"""Fixtures of the tests of `common/`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from common.db import migrate
from common.db.session import make_engine
from tests.services import temporary_database


@pytest.fixture(autouse=True)
def _today_is_the_tests_day(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module's `TODAY` is the UTC day its test starts on, not the day it was imported:
    a run that crosses midnight (CI collected at 23:56, these tests ran after 00:00) compared
    the ids and partitions of the new day with the old one and failed five tests."""
    if hasattr(request.module, "TODAY"):
        monkeypatch.setattr(request.module, "TODAY", datetime.now(UTC).date())


@pytest.fixture
def engine() -> Iterator[Engine]:
    """An engine on a PostgreSQL database of the test's own, migrated to the head."""
    with temporary_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()
