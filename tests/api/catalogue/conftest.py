"""The catalogue routes (issue 16) on both databases: each test runs on a copy of the
migrated SQLite template and on the session's PostgreSQL (emptied after the test)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from common.db.models import Base
from common.db.session import make_engine


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, migrated_template: Path, tmp_path: Path
) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "hookline.db"
        shutil.copyfile(migrated_template, path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("migrated_postgres")
    yield url
    engine = make_engine(url)
    with engine.begin() as connection:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()
