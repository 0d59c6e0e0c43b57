"""The API tests' app factory (a migrated SQLite copy, TestClient), for the broker-down tests."""

from __future__ import annotations

from tests.api.conftest import database_url, make_api, migrated_template

__all__ = ["database_url", "make_api", "migrated_template"]
