"""The count behind the catalogue's expansion bound (`hookline.services.schema_expansion`):
what it follows, how far it unrolls a recursion, and where it stops."""

from __future__ import annotations

import pytest

from hookline.services.schema_expansion import Unbounded, expanded_size
from tests.api.catalogue.costly import ANY_JSON, BINARY, anyof_chain

TREE = {  # one way back: each two levels of data (an object, its array) add three
    "$defs": {"node": {"type": "object", "properties": {
        "name": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
    }}},
    "$ref": "#/$defs/node",
}  # fmt: skip


def test_each_reference_counts_its_target_again_where_it_stands() -> None:
    assert expanded_size(anyof_chain(3), 10_000, 64) == 30  # 1 + 2 * (1 + ...) per level
    assert expanded_size(anyof_chain(40), 10_000, 64) == 10_001  # stops past the limit


def test_a_recursion_is_unrolled_as_deep_as_data_may_nest() -> None:
    assert expanded_size(TREE, 10_000, 0) == 2  # no data below: `properties` apply to none
    assert expanded_size(TREE, 10_000, 2) == 5  # root and node; children; its node's ref
    assert expanded_size(TREE, 10_000, 64) == 98


# Both branches of each level go down the same property: 2^levels paths to the bottom.
SAME_CHILD_TWICE = {"$defs": {"d": {"anyOf": [
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/d"}}},
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/d"}}},
]}}, "$ref": "#/$defs/d"}  # fmt: skip


def test_only_one_path_into_the_data_is_counted_at_a_time() -> None:
    assert expanded_size(BINARY, 10_000, 64) == 129  # 1 + 2 per level, not 2^64
    assert expanded_size(ANY_JSON, 10_000, 64) == 1 + 5 * 64 + 4  # the ref and its 4 a level
    assert expanded_size(SAME_CHILD_TWICE, 10_000, 10) == 8 * 2**10 - 4  # doubles a level
    assert expanded_size(SAME_CHILD_TWICE, 10_000, 64) == 10_001


def test_references_nested_too_deep_to_count_have_no_bound() -> None:
    chain: dict[str, object] = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(5000)}
    with pytest.raises(Unbounded, match="nest too deep to count"):
        expanded_size({"$defs": {**chain, "d5000": {}}, "$ref": "#/$defs/d0"}, 10_000, 64)


def test_anchors_escaped_pointers_and_embedded_resources_are_followed() -> None:
    schema = {
        "$defs": {
            "a/b": {"$anchor": "money", "type": "integer"},
            "inner": {"$id": "https://example.com/inner", "$defs": {"x": {}}, "$ref": "#/$defs/x"},
        },
        "allOf": [{"$ref": "#money"}, {"$ref": "#/$defs/a~1b"}, {"$ref": "#/$defs/inner"}],
    }

    assert expanded_size(schema, 10_000, 64) == 1 + 2 * 2 + 3


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"$ref": "#"}, "never goes into the data"),
        ({"not": {"anyOf": [{"$ref": "#/not"}]}}, "never goes into the data"),
        ({"$ref": "#/$defs/missing"}, "cannot be followed"),
    ],
    ids=["root in place", "through not and anyOf", "missing target"],
)
def test_a_cycle_in_place_or_a_reference_it_cannot_follow_has_no_bound(
    schema: dict[str, object], words: str
) -> None:
    with pytest.raises(Unbounded, match=words):
        expanded_size(schema, 10_000, 64)
