"""An API app on a migrated SQLite file and the in-memory broker, driven by TestClient."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.db.migrate import upgrade
from tests.api.support import Api, build_api


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test gets a copy (migrating costs ~1 s a test)."""
    path = tmp_path_factory.mktemp("template") / "hookline.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(migrated_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "hookline.db"
    shutil.copyfile(migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def make_api(database_url: str) -> Iterator[Callable[..., Api]]:
    """`make_api(transport=..., sessionmaker=..., **settings)`: an app; closed after the test."""
    made: list[Api] = []

    def create(**options: Any) -> Api:
        api = build_api(database_url, **options)
        made.append(api)
        return api

    yield create
    for api in made:
        api.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture
def ops_api(sqlite_url: str) -> Iterator[Api]:
    """An app for the operations routes (`test_operations.py`), on a migrated SQLite file and
    the memory broker. The routes' queries are the dispatcher packages', which
    `tests/dispatcher/deadletters` and `tests/dispatcher/replay` run on PostgreSQL too; the
    routes themselves run once."""
    upgrade(sqlite_url)
    api = build_api(sqlite_url)
    yield api
    for thread in getattr(api.app.state, "replay_threads", {}).values():
        thread.join(10)
    api.close()
