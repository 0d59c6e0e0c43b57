"""The example environment in deploy/ names only settings Hookline really reads."""

from pathlib import Path

import pytest

from common.settings import Settings

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "hookline.env.example"


def test_every_variable_in_the_example_is_a_setting_and_parses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pairs = dict(
        line.split("=", 1)
        for line in EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    fields = {f"HOOKLINE_{name.upper()}" for name in Settings.model_fields}
    assert set(pairs) <= fields, set(pairs) - fields
    for name, value in pairs.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.max_attempts == 8
    assert settings.allow_private_targets is False
