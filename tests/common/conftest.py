"""Fixtures of the tests of `common/`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from common.db import migrate
from common.db.session import make_engine
from tests.services import temporary_database


@pytest.fixture
def engine() -> Iterator[Engine]:
    """An engine on a PostgreSQL database of the test's own, migrated to the head."""
    with temporary_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()
