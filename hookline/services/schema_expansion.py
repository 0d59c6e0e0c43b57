"""How many subschemas validating one event can visit: a schema's size once every `$ref` is
replaced by its target.

A schema's text says little about its cost. `{"anyOf": [{"$ref": "#/$defs/b"}, {"$ref":
"#/$defs/b"}]}` names `b` twice, and a chain of 20 such definitions fits in 1.5 KB yet sends
the validator down 2^20 paths (collecting every failing branch to word the error makes that
minutes). So the count expands each reference where it stands, as the validator does,
memoised per (subschema, data depth) so the count itself stays cheap, and stops once it
passes the limit.

Recursion is bounded by the data: a keyword that applies to the instance's children
(`properties`, `items`, ...) goes one level down, and data nests at most
`common.payload.MAX_DEPTH` levels, so a cycle through one is unrolled that many times. A
recursion with one way back (a tree's `children`) stays small; one with two (`left` and
`right`, or `anyOf` of two references) doubles every level and is over any limit. A cycle
that never goes down (`a` is `allOf: [{"$ref": a}]`) would validate forever: refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

# Keywords whose subschemas apply to the instance itself, and to its children (a level down);
# of these, the ones whose value maps names to subschemas.
_HERE = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas",
         "dependencies")  # fmt: skip
_DOWN = (
    "properties", "patternProperties", "additionalProperties", "unevaluatedProperties",
    "propertyNames", "items", "prefixItems", "additionalItems", "unevaluatedItems", "contains",
)  # fmt: skip
_MAPS = ("properties", "patternProperties", "dependentSchemas", "dependencies")
_REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")


class Unbounded(Exception):
    """The schema's expansion has no bound this count can state (`str()` says why)."""


def expanded_size(schema: Any, limit: int, depth: int) -> int:
    """The number of subschemas in `schema` with every reference expanded and recursion
    unrolled `depth` levels of data deep, counting no further than `limit + 1`.

    Raises `Unbounded` for a reference cycle that never goes down a level, or a reference
    this count cannot follow (the validator may follow it, so it is not assumed cheap)."""
    document = _Document(schema)
    sizes: dict[tuple[int, int], int] = {}  # (id of a subschema, data depth) -> its size
    stack = [_Frame((id(schema), depth), document.applied(schema, depth))]
    open_keys = {stack[0].key}
    while True:
        frame = stack[-1]
        if frame.size > limit:
            return limit + 1
        if frame.pending:
            child, level = frame.pending.pop()
            key = (id(child), level)
            if key in sizes:
                frame.size += sizes[key]
            elif key in open_keys:
                raise Unbounded("a $ref cycle never goes into the data: it would validate forever")
            else:
                stack.append(_Frame(key, document.applied(child, level)))
                open_keys.add(key)
            continue
        stack.pop()
        open_keys.discard(frame.key)
        sizes[frame.key] = frame.size
        if not stack:
            return min(frame.size, limit + 1)
        stack[-1].size += frame.size


@dataclass
class _Frame:
    key: tuple[int, int]
    pending: list[tuple[Any, int]]  # (subschema, the data depth it applies at)
    size: int = 1


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

    def applied(self, node: Any, depth: int) -> list[tuple[Any, int]]:
        """The subschemas `node` applies, each with the data depth it applies at."""
        if not isinstance(node, dict):
            return []  # `true` / `false`
        found: list[tuple[Any, int]] = []
        for keyword, value in node.items():
            if keyword in _REFERENCES:
                if isinstance(value, str):
                    found.extend((target, depth) for target in self._targets(node, value))
            elif keyword in _HERE:
                found.extend((child, depth) for child in _subschemas(keyword, value))
            elif keyword in _DOWN and depth > 0:  # no data deeper: they apply to nothing
                found.extend((child, depth - 1) for child in _subschemas(keyword, value))
        return found

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
