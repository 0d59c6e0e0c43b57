"""Schemas small in text and costly to validate with, for the catalogue's tests, and two
whose recursion looks as costly and is not."""

from __future__ import annotations


def anyof_chain(levels: int) -> dict[str, object]:
    """~70 bytes a level, 2^levels paths: each level tries the next one twice over."""
    defs: dict[str, object] = {
        f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


# Two ways back into different children: one path follows one of them at each level.
BINARY = {"type": "object", "properties": {
    "value": {"type": "integer"}, "left": {"$ref": "#"}, "right": {"$ref": "#"},
}}  # fmt: skip
# Any JSON value: an object's branch and an array's branch both point back, but a value is
# one or the other.
ANY_JSON = {"$defs": {"json": {"anyOf": [
    {"type": ["string", "number", "boolean", "null"]},
    {"type": "object", "additionalProperties": {"$ref": "#/$defs/json"}},
    {"type": "array", "items": {"$ref": "#/$defs/json"}},
]}}, "$ref": "#/$defs/json"}  # fmt: skip
