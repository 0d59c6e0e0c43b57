"""`payload.storable_text`: text no door checked, made storable rather than refused."""

from __future__ import annotations

import pytest

from common.payload import is_storable_text, storable_text


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("plain", "plain"),
        ("été", "été"),
        ("a\x00b\x00", "a\ufffdb\ufffd"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
    ],
)
def test_what_the_database_refuses_is_replaced_and_the_rest_kept(text: str, stored: str) -> None:
    assert storable_text(text) == stored
    assert is_storable_text(storable_text(text))
