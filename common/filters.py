"""Payload filters: a small JSON language that chooses events by the content of `data`.

A filter is a JSON object; every entry must hold (they are ANDed):

    {"customer.tier": "gold"}                      equality (a scalar or a list)
    {"customer.tier": {"in": ["gold", "silver"]}}  one of several values (`not_in` too)
    {"coupon": {"exists": true}}                   the path is present (false: absent)
    {"total": {"gte": 100, "lt": 1000}}            numeric comparisons: gt, gte, lt, lte
    {"status": {"eq": "paid"}}, {"ne": ...}        explicit (in)equality (objects too)
    {"any": [filter, filter, ...]}                 at least one of the filters holds
    {"all": [filter, ...]}, {"not": filter}        all of them hold; the filter does not

A JSON object as a condition is always a set of operators, so a misspelt operator is an
error rather than an equality that never holds; compare with an object through `eq`.
Keys are dotted paths into `data` (`items.0.sku`: a digit step indexes a list). A missing
path fails every test except `exists: false` and `ne`/`not_in`. Comparisons never coerce:
`1` does not equal `"1"` or `true`, and a string is never `gt` a number. A filter is
checked when a subscription is saved (`validate`), so routing (`matches`) cannot fail.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

MAX_FILTER_BYTES = 4096
MAX_DEPTH = 8
PATH_STEPS_MAX = 16
COMBINATORS = frozenset({"any", "all", "not"})
COMPARISONS = frozenset({"gt", "gte", "lt", "lte"})
OPERATORS = frozenset({"eq", "ne", "in", "not_in", "exists"}) | COMPARISONS
_MISSING = object()


class FilterError(ValueError):
    """A payload filter that is not in the documented language."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: `True` is not `1`, `1` is `1.0`, containers compare item by item."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _lookup(data: Any, path: str) -> Any:
    node = data
    for step in path.split("."):
        if isinstance(node, dict):
            node = node.get(step, _MISSING)
        elif isinstance(node, list) and step.isascii() and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _test(operator: str, operand: Any, value: Any) -> bool:
    present = value is not _MISSING
    if operator == "exists":
        return present is operand
    if operator == "ne":
        return not (present and _same(value, operand))
    if operator == "not_in":
        return not (present and any(_same(value, item) for item in operand))
    if not present:
        return False
    if operator == "eq":
        return _same(value, operand)
    if operator == "in":
        return any(_same(value, item) for item in operand)
    return _is_number(value) and _COMPARE[operator](value, operand)


def matches(spec: Mapping[str, Any] | None, data: Any) -> bool:
    """True when `data` passes the (validated) filter; no filter passes everything."""
    if not spec:
        return True
    for key, condition in spec.items():
        if key == "any":
            held = any(matches(part, data) for part in condition)
        elif key == "all":
            held = all(matches(part, data) for part in condition)
        elif key == "not":
            held = not matches(condition, data)
        elif isinstance(condition, dict):
            value = _lookup(data, key)
            held = all(_test(op, operand, value) for op, operand in condition.items())
        else:
            held = _test("eq", condition, _lookup(data, key))
        if not held:
            return False
    return True


def _check_path(path: str) -> None:
    steps = path.split(".")
    if not path or len(steps) > PATH_STEPS_MAX or any(not step for step in steps):
        raise FilterError(f"{path!r} is not a dotted path (e.g. customer.tier)")


# Messages show a tenant's key as its repr, escaped: pydantic, which carries a message to the
# 422, cannot encode a lone surrogate, and raised UnicodeEncodeError instead (a 500).
def _check_operators(path: str, condition: dict[str, Any]) -> None:
    for operator, operand in condition.items():
        where = repr(f"{path}.{operator}")
        if operator in ("in", "not_in") and not isinstance(operand, list):
            raise FilterError(f"{where}: expects a list of values")
        if operator == "exists" and not isinstance(operand, bool):
            raise FilterError(f"{where}: expects true or false")
        if operator in COMPARISONS and not _is_number(operand):
            raise FilterError(f"{where}: expects a number")


def _check(spec: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FilterError(f"filter nests deeper than {MAX_DEPTH} levels")
    if not isinstance(spec, dict):
        raise FilterError("a filter is a JSON object of path: condition entries")
    for key, condition in spec.items():
        if key in ("any", "all"):
            if not isinstance(condition, list) or not condition:
                raise FilterError(f"{key}: expects a non-empty list of filters")
            for part in condition:
                _check(part, depth + 1)
        elif key == "not":
            _check(condition, depth + 1)
        else:
            _check_path(key)
            if isinstance(condition, dict):
                unknown = set(condition) - OPERATORS
                if not condition or unknown:
                    name = sorted(unknown)[0] if unknown else "(none)"
                    raise FilterError(
                        f"{key!r}: unknown operator {name!r}; compare with an object through eq"
                    )
                _check_operators(key, condition)


def validate(spec: Any) -> dict[str, Any]:
    """The filter itself if it is in the language; otherwise `FilterError` saying where."""
    if len(json.dumps(spec)) > MAX_FILTER_BYTES:
        raise FilterError(f"filter is larger than {MAX_FILTER_BYTES} bytes")
    _check(spec, 1)
    result: dict[str, Any] = spec
    return result
