"""How many subschemas validating one event can visit along one path into its data: a
schema's size with every `$ref` replaced by its target.

A schema's text says little about its cost. `{"anyOf": [{"$ref": "#/$defs/b"}, {"$ref":
"#/$defs/b"}]}` names `b` twice, and a chain of 20 such definitions fits in 1.5 KB yet sends
the validator down 2^20 paths (collecting every failing branch to word the error makes that
minutes). So the count expands each reference where it stands, as the validator does,
memoised per (subschema, data depth) so the count itself stays cheap, and stops once it
passes the limit.

What applies to one value adds up: every subschema of `allOf`, `anyOf`, `not`, ... and every
reference. Into the data, only one path is followed at a time: a child of an object is
validated against its one property's subschema (or `additionalProperties`) plus any
matching `patternProperties`; an item against its position's or `items`, plus `contains`;
and a value is an object or an array, not both. So a tree whose `left` and `right` point
back to it costs what one branch does at each level, while `anyOf` of two references that
go down the same property doubles every level. A recursion is unrolled as deep as data may
nest (`common.payload.MAX_DEPTH`). A cycle that never goes down (`a` is `allOf: [{"$ref":
a}]`) would validate forever: refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

# Keywords whose subschemas apply to the value itself.
_HERE = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas",
         "dependencies")  # fmt: skip
# Into a child of an object, or an item of an array: of the first group one subschema
# applies to a given child (the largest counts), every one of the second may apply too.
_OBJECT_ONE = ("properties", "additionalProperties")
_OBJECT_ALL = ("patternProperties", "unevaluatedProperties", "propertyNames")
_ARRAY_ONE = ("prefixItems", "items", "additionalItems")
_ARRAY_ALL = ("contains", "unevaluatedItems")
_MAPS = ("properties", "patternProperties", "dependentSchemas", "dependencies")
_REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")


class Unbounded(Exception):
    """The schema's expansion has no bound this count can state (`str()` says why)."""


def expanded_size(schema: Any, limit: int, depth: int) -> int:
    """The most subschemas validating one value of data and its way down along one path
    can visit, every reference expanded and recursion unrolled `depth` levels of data deep,
    counting no further than `limit + 1`.

    Raises `Unbounded` for a reference cycle that never goes down a level, a reference this
    count cannot follow (the validator may follow it, so it is not assumed cheap), or
    references nested too deep to count."""
    document = _Document(schema)
    cap = limit + 1
    known: dict[tuple[int, int], _Cost] = {}  # (id of a subschema, data depth) -> its cost
    open_keys: set[tuple[int, int]] = set()

    def size(node: Any, level: int) -> int:
        cost = cost_of(node, level)
        return min(cost.here + max(cost.into_object, cost.into_array), cap)

    def child_cost(
        node: dict[str, Any], level: int, one: tuple[str, ...], every: tuple[str, ...]
    ) -> int:
        """The most a child of `node`'s value meets, one level down."""
        only, all_of = document.down(node, one, every)
        biggest = max((size(child, level - 1) for child in only), default=0)
        return biggest + sum(size(child, level - 1) for child in all_of)

    def cost_of(node: Any, level: int) -> _Cost:
        key = (id(node), level)
        if key in known:
            return known[key]
        if key in open_keys:
            raise Unbounded("a $ref cycle never goes into the data: it would validate forever")
        open_keys.add(key)
        here, into_object, into_array = 1, 0, 0
        for child in document.here(node):
            cost = cost_of(child, level)
            here = min(here + cost.here, cap)
            into_object = min(into_object + cost.into_object, cap)
            into_array = min(into_array + cost.into_array, cap)
        if level > 0 and isinstance(node, dict):  # below the deepest data they apply to none
            into_object = min(into_object + child_cost(node, level, _OBJECT_ONE, _OBJECT_ALL), cap)
            into_array = min(into_array + child_cost(node, level, _ARRAY_ONE, _ARRAY_ALL), cap)
        open_keys.discard(key)
        known[key] = _Cost(here, into_object, into_array)
        return known[key]

    try:
        return size(schema, depth)
    except RecursionError:
        raise Unbounded("its references nest too deep to count") from None


@dataclass(frozen=True)
class _Cost:
    here: int  # subschemas applied to the value itself
    into_object: int  # the most applied along one path into an object's children
    into_array: int  # the same into an array's items


@dataclass
class _Document:
    """The schema with what resolving a reference needs: the resource (nearest `$id`) each
    object belongs to, and the objects that declare each anchor."""

    root: Any
    resource: dict[int, Any] = field(default_factory=dict)
    anchors: dict[str, list[Any]] = field(default_factory=dict)
    recursive: list[Any] = field(default_factory=list)  # `$recursiveAnchor: true`

    def __post_init__(self) -> None:
        pending = [(self.root, self.root)]
        while pending:  # iteratively: a hostile document must not exhaust the stack
            node, resource = pending.pop()
            if isinstance(node, list):
                pending.extend((item, resource) for item in node)
                continue
            if not isinstance(node, dict):
                continue
            if node is not self.root and isinstance(node.get("$id"), str):
                resource = node
            self.resource[id(node)] = resource
            for keyword in ("$anchor", "$dynamicAnchor"):
                if isinstance(node.get(keyword), str):
                    self.anchors.setdefault(node[keyword], []).append(node)
            if node.get("$recursiveAnchor") is True:
                self.recursive.append(node)
            pending.extend((value, resource) for value in node.values())

    def here(self, node: Any) -> list[Any]:
        """The subschemas `node` applies to the value itself, references expanded."""
        if not isinstance(node, dict):
            return []  # `true` / `false`
        found: list[Any] = []
        for keyword, value in node.items():
            if keyword in _REFERENCES:
                if isinstance(value, str):
                    found.extend(self._targets(node, value))
            elif keyword in _HERE:
                found.extend(_subschemas(keyword, value))
        return found

    @staticmethod
    def down(
        node: dict[str, Any], one: tuple[str, ...], every: tuple[str, ...]
    ) -> tuple[list[Any], list[Any]]:
        """The subschemas of `node`'s keywords in `one` and in `every` (see `_OBJECT_ONE`)."""
        return (
            [child for keyword in one if keyword in node
             for child in _subschemas(keyword, node[keyword])],
            [child for keyword in every if keyword in node
             for child in _subschemas(keyword, node[keyword])],
        )  # fmt: skip

    def _targets(self, node: dict[str, Any], reference: str) -> list[Any]:
        """Every object `reference` may mean: resolved against its resource and against the
        document root, and each declarer of an anchor name (the dynamic scope is not
        tracked, so every candidate counts)."""
        if not reference.startswith("#"):
            raise Unbounded(f"{reference!r} is not a reference inside the schema")
        fragment = unquote(reference[1:])
        bases = [self.resource.get(id(node), self.root), self.root]
        if fragment == "" or fragment.startswith("/"):
            found = [_pointer(base, fragment) for base in bases]
            if fragment == "":
                found.extend(self.recursive)
        else:
            found = list(self.anchors.get(fragment, []))
        unique = list({id(target): target for target in found if target is not None}.values())
        if not unique:
            raise Unbounded(f"{reference!r} cannot be followed")
        return unique


def _subschemas(keyword: str, value: Any) -> list[Any]:
    if isinstance(value, dict) and keyword in _MAPS:
        values: list[Any] = list(value.values())
    else:
        values = value if isinstance(value, list) else [value]
    return [item for item in values if isinstance(item, dict | bool)]


def _pointer(base: Any, pointer: str) -> Any:
    """The value at JSON Pointer `pointer` (RFC 6901) in `base`, or None."""
    node = base
    for token in pointer.split("/")[1:]:
        step = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
    return node
