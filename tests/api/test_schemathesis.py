"""Schemathesis against `/openapi.json`: generated requests to every operation, checking
that nothing answers 5xx and every answer matches the published schema.

Every check but `positive_data_acceptance`: rules a JSON schema cannot say (a URL the
SSRF guard refuses, a payload filter outside its language, an opaque cursor) are 422s
for requests the schema allows, and are tested one by one elsewhere.

Kept to about a minute: a few dozen examples per operation (`HOOKLINE_FUZZ_EXAMPLES`
raises it for a longer run). No request leaves the machine: the resolver refuses every
name, so subscription URLs are refused before any handshake.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from common.errors import UnsafeTargetError
from tests.api.support import Api

EXAMPLES = int(os.environ.get("HOOKLINE_FUZZ_EXAMPLES", "15"))


def refuse(host: str, port: int) -> list[str]:
    raise UnsafeTargetError("the fuzz test resolves no name")


@pytest.fixture
def fuzzed(make_api: Any) -> Api:
    api: Api = make_api(allow_private_targets=False, resolver=refuse)
    return api


def test_every_operation_answers_within_its_schema(fuzzed: Api) -> None:
    _, auth = fuzzed.tenant("fuzz")
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed.app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 30

    for operation in operations:
        admin = operation.path.startswith(("/v1/tenants", "/v1/audit-log"))
        check(operation, fuzzed.admin if admin else auth)


def check(operation: Any, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

    run()
