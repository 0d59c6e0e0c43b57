"""Secrets at rest: sealed with the configured key, and no placeholder key outside dev."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from common.errors import ConfigurationError
from common.secretbox import DEV_SECRET_KEY, SecretBox, check_secret_key
from hookline.cli import app


def test_a_sealed_secret_opens_only_with_the_same_key() -> None:
    token = SecretBox("a-real-key-of-enough-length").seal("whsec_abc")
    assert "whsec_abc" not in token
    assert SecretBox("a-real-key-of-enough-length").open(token) == "whsec_abc"
    with pytest.raises(ConfigurationError, match="differs"):
        SecretBox("another-key-of-enough-length").open(token)


@pytest.mark.parametrize(
    "value",
    [
        *(None, "", "  ", "CHANGE-ME", "changeme", DEV_SECRET_KEY, "short"),
        *("change-me-secret-key", "Replace_Me_With_A_Real_Key"),
    ],
)
def test_missing_placeholder_and_short_keys_are_refused(value: str | None) -> None:
    with pytest.raises(ConfigurationError, match="HOOKLINE_SECRET_KEY"):
        check_secret_key(value)


def test_the_api_command_refuses_to_start_on_the_example_placeholder(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("HOOKLINE_SECRET_KEY", "CHANGE-ME")
    monkeypatch.setenv("HOOKLINE_DATABASE_URL", f"sqlite:///{tmp_path}/x.db")
    result = CliRunner().invoke(app, ["api", "--port", "1"])
    assert result.exit_code == 2
    assert "placeholder" in result.output
