"""Schemas small in text and costly to validate with, for the catalogue's tests."""

from __future__ import annotations


def anyof_chain(levels: int) -> dict[str, object]:
    """~70 bytes a level, 2^levels paths: each level tries the next one twice over."""
    defs: dict[str, object] = {
        f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}
