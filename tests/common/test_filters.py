"""The payload filter language: each documented form, and the refusals at save time."""

from __future__ import annotations

from typing import Any

import pytest

from common.filters import FilterError, matches, validate

ORDER = {
    "total": 250,
    "currency": "EUR",
    "paid": True,
    "customer": {"tier": "gold", "id": 7},
    "items": [{"sku": "A-1"}, {"sku": "B-2"}],
}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, True),
        ({"currency": "EUR"}, True),
        ({"currency": "USD"}, False),
        ({"customer.tier": "gold"}, True),
        ({"customer": {"eq": {"tier": "gold", "id": 7}}}, True),
        ({"items.0": {"eq": {"sku": "A-1"}}}, True),
        ({"items.1.sku": "B-2"}, True),
        ({"items.5.sku": "B-2"}, False),
        # "²" is a digit to str.isdigit, not an index: a step no list has, not an error.
        ({"items.\u00b2": {"exists": True}}, False),
        ({"items.\u00b2": {"exists": False}}, True),
        ({"customer.tier": {"in": ["gold", "silver"]}}, True),
        ({"customer.tier": {"in": ["bronze"]}}, False),
        ({"customer.tier": {"not_in": ["bronze"]}}, True),
        ({"coupon": {"exists": False}}, True),
        ({"coupon": {"exists": True}}, False),
        ({"customer.id": {"exists": True}}, True),
        ({"total": {"gte": 250, "lt": 1000}}, True),
        ({"total": {"gt": 250}}, False),
        ({"total": {"lte": 249.5}}, False),
        ({"currency": {"gt": 1}}, False),
        ({"currency": {"ne": "USD"}}, True),
        ({"coupon": {"ne": "X"}}, True),
        ({"any": [{"currency": "USD"}, {"paid": True}]}, True),
        ({"all": [{"currency": "EUR"}, {"paid": False}]}, False),
        ({"not": {"currency": "USD"}}, True),
        ({"currency": "EUR", "total": {"lt": 100}}, False),
    ],
)
def test_a_filter_chooses_events_by_their_data(spec: dict[str, Any], expected: bool) -> None:
    assert matches(validate(spec), ORDER) is expected


def test_equality_never_coerces_between_json_types() -> None:
    assert not matches({"paid": 1}, ORDER)
    assert not matches({"total": "250"}, ORDER)
    assert matches({"total": 250.0}, ORDER)
    assert not matches({"n": {"in": [True]}}, {"n": 1})


def test_no_filter_lets_every_event_through() -> None:
    assert matches(None, {"anything": 1})


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ([], "JSON object"),
        ({"total": {"gt": "100"}}, "expects a number"),
        ({"total": {"in": "gold"}}, "list of values"),
        ({"total": {"exists": "yes"}}, "true or false"),
        ({"total": {"gt": 1, "around": 2}}, "unknown operator 'around'"),
        ({"customer": {"tier": "gold"}}, "through eq"),
        ({"customer": {}}, "unknown operator"),
        ({"a..b": 1}, "dotted path"),
        ({"any": []}, "non-empty list"),
        ({"not": [1]}, "JSON object"),
        ({"x": "y" * 5000}, "larger than"),
    ],
)
def test_a_filter_outside_the_language_is_refused_with_the_reason(spec, complaint: str) -> None:
    with pytest.raises(FilterError, match=complaint):
        validate(spec)


@pytest.mark.parametrize(
    "spec", [{"\ud800": {"bogus": 1}}, {"a\ud800": {"in": 1}}, {"a\ud800": {"gt": "x"}}]
)
def test_a_refusal_shows_the_key_escaped_so_it_can_be_encoded(spec: dict[str, Any]) -> None:
    with pytest.raises(FilterError) as refused:
        validate(spec)
    assert "\\ud800" in str(refused.value)
    str(refused.value).encode()  # a lone surrogate as it was would raise here


def test_nesting_is_bounded() -> None:
    spec: dict[str, Any] = {"a": 1}
    for _ in range(10):
        spec = {"not": spec}
    with pytest.raises(FilterError, match="deeper"):
        validate(spec)
