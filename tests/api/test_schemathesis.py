"""Schemathesis against `/openapi.json`, on PostgreSQL: its examples, coverage and fuzzing
phases, valid and invalid data, against every operation. No answer may be a 5xx or a
status code the operation does not document, and every answer must match its schema.

Every check but `positive_data_acceptance`: rules a JSON schema cannot say (a URL the
SSRF guard refuses, a payload filter outside its language, an opaque cursor) are 422s
for requests the schema allows, and are tested one by one elsewhere.

PostgreSQL, because it is stricter than SQLite (NUL in text, timestamp ranges): what it
refuses must be refused at the edge, as a 4xx. Kept to a couple of minutes with a fixed
seed and a few examples per operation; `HOOKLINE_FUZZ_EXAMPLES` and `HOOKLINE_FUZZ_SEED`
make a longer or another run (docs/architecture.md, "Input limits", has one). No request
leaves the machine: the resolver refuses every name, so subscription URLs are refused
before any handshake.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import schemathesis.engine
from schemathesis import GenerationMode
from schemathesis.engine import Status, events
from sqlalchemy import text

from common.db.models import Base
from common.db.session import make_engine
from common.errors import UnsafeTargetError
from tests.api.support import Api

EXAMPLES = int(os.environ.get("HOOKLINE_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("HOOKLINE_FUZZ_SEED", "20261204"))
PHASES = ["examples", "coverage", "fuzzing"]

pytestmark = pytest.mark.postgres


@pytest.fixture
def database_url(migrated_postgres: str) -> Iterator[str]:
    """This module's API on the session's PostgreSQL, emptied afterwards."""
    yield migrated_postgres
    engine = make_engine(migrated_postgres)
    with engine.begin() as connection:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()


def refuse(host: str, port: int) -> list[str]:
    raise UnsafeTargetError("the fuzz test resolves no name")


@pytest.fixture
def fuzzed(make_api: Any) -> Api:
    # The fuzzer sends a tenant key's requests far faster than a tenant's default rate: a
    # 429 would stand in for the answers it is here to check.
    api: Api = make_api(
        allow_private_targets=False, resolver=refuse, tenant_requests_per_s=1_000_000
    )
    return api


def test_every_operation_answers_within_its_schema(fuzzed: Api) -> None:
    _, auth = fuzzed.tenant("fuzz")
    admin_paths = r"^/v1/(tenants|audit-log)"
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed.app)
    assert sum(1 for _ in schema.get_all_operations()) >= 30
    failures = run(schema.include(path_regex=admin_paths), fuzzed.admin)
    failures += run(schema.exclude(path_regex=admin_paths), auth)
    assert not failures, "\n\n".join(failures)


def run(schema: Any, headers: dict[str, str]) -> list[str]:
    """Run the engine the `schemathesis run` command runs; returns the failures."""
    schema.config.seed = SEED
    schema.config.update(headers=headers)
    schema.config.phases.update(phases=PHASES)
    schema.config.generation.update(
        max_examples=EXAMPLES, modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    )
    schema.config.checks.update(excluded_check_names=["positive_data_acceptance"])
    # A body over the size limit (256 KiB; the schema allows 10,000 replay ids of 64
    # characters) is refused with a 413 before it is read: invalid data rejected too.
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    failures: list[str] = []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.status in (
            Status.FAILURE, Status.ERROR,
        ):  # fmt: skip
            failures.extend(describe(event))
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            failures.append(f"engine: {event.exception!r}")
    return failures


def describe(event: Any) -> list[str]:
    found = []
    for checks in event.recorder.checks.values():
        for check in checks:
            if check.failure_info is not None:
                failure = check.failure_info.failure
                found.append(
                    f"{event.label} [{event.phase}] {check.name}: {failure.title}\n"
                    f"{failure.message}\n{check.failure_info.code_sample}"
                )
    return found or [f"{event.label} [{event.phase}]: {event.status}"]
