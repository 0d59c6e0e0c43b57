"""What a JSON value may hold to be accepted: the one check every door applies.

An event is accepted (202) only if the router can store it and the dispatcher can send it;
what PostgreSQL or the wire would refuse later has to be refused here, at ingest, with the
place of the bad value. The API's request bodies (events, single, batch and fast path,
and every other body) and the producer SDK call `check`; the router relies on it.

- Strings, keys included, hold no NUL (`\\u0000`: PostgreSQL's `text` and `jsonb` refuse
  it) and no lone surrogate (not encodable as UTF-8).
- Numbers: floats finite (JSON has no NaN or Infinity; they were stored as `null`),
  integers within what 64-bit JSON parsers keep exactly (`-2**63 .. 2**64-1`).
- Nesting at most `MAX_DEPTH` levels (the router's JSON parser stops at 200).

One pass over the value, in Python, costing about what parsing it did.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_DEPTH = 64
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_MAX_SEGMENT = 40  # characters of one key shown in a path
_MAX_PATH = 200

Path = tuple["Path", str | int] | None  # a linked list, child first: built only on error


class UnstorableValue(ValueError):
    """A value the database or the wire would refuse; the message names where it is."""


def check(value: Any, root: str = "") -> None:
    """Raise `UnstorableValue` unless `value` (from JSON, or JSON-like Python) is storable.

    `root` names the value in the message (`data` gives `data.items.0.name: ...`)."""
    _value(value, 0, (None, root) if root else None)


def is_storable_text(text: str) -> bool:
    return "\x00" not in text and (text.isascii() or _UNSTORABLE.search(text) is None)


def storable_text(text: str) -> str:
    """`text` with what the database refuses (NUL, lone surrogates) replaced by U+FFFD: for
    text Hookline stores but no door checked (a receiver's answer, a poison message's
    headers), where refusing is not an option."""
    return text if is_storable_text(text) else _UNSTORABLE.sub("\ufffd", text)


def _value(value: Any, depth: int, path: Path) -> None:
    kind = type(value)
    if kind is dict or kind is list:
        _container(value, depth, path)
    elif kind is str:
        if not is_storable_text(value):
            _refuse(path, _text_problem(value))
    elif kind is int:
        if not MIN_INT <= value <= MAX_INT:
            _refuse(path, f"integer outside {MIN_INT}..{MAX_INT}")
    elif kind is float:
        if not math.isfinite(value):
            _refuse(path, f"{value} is not a JSON number")
    elif kind is tuple:
        _container(list(value), depth, path)
    elif isinstance(value, str | dict | list | float | int) and not isinstance(value, bool):
        _value(_plain(value), depth, path)  # a subclass (an enum, an OrderedDict): as its base


def _container(value: dict[Any, Any] | list[Any], depth: int, path: Path) -> None:
    # The hot loop: plain leaves are checked inline, a call is made per container only.
    if depth >= MAX_DEPTH:
        _refuse(path, f"nested deeper than {MAX_DEPTH} levels")
    items = value.items() if type(value) is dict else enumerate(value)
    for key, item in items:
        if type(key) is str:
            if "\x00" in key or not (key.isascii() or _UNSTORABLE.search(key) is None):
                _refuse((path, key), "key " + _text_problem(key))
        elif type(key) is not int or type(value) is dict:
            _refuse(path, "an object key is not a string")
        kind = type(item)
        if kind is str:
            if "\x00" in item or not (item.isascii() or _UNSTORABLE.search(item) is None):
                _refuse((path, key), _text_problem(item))
        elif kind is dict or kind is list:
            _container(item, depth + 1, (path, key))
        elif kind is bool or item is None:
            pass
        elif kind is int:
            if not MIN_INT <= item <= MAX_INT:
                _refuse((path, key), f"integer outside {MIN_INT}..{MAX_INT}")
        elif kind is float:
            if not math.isfinite(item):
                _refuse((path, key), f"{item} is not a JSON number")
        else:
            _value(item, depth + 1, (path, key))


# A subclass of a JSON type, from Python callers of the SDK, is checked as its base.
def _plain(value: Any) -> Any:
    base: Any
    for base in (str, dict, list, float, int):
        if isinstance(value, base):
            return base(value)
    return value


def _text_problem(text: str) -> str:
    if "\x00" in text:
        return "holds NUL (\\u0000), which cannot be stored"
    return "holds a lone surrogate, which is not valid UTF-8"


def _refuse(path: Path, problem: str) -> None:
    raise UnstorableValue(f"{_where(path)}: {problem}" if path is not None else problem)


def _where(path: Path) -> str:
    segments: list[str] = []
    while path is not None:
        path, step = path
        text = str(step).encode("unicode_escape").decode("ascii")
        segments.append(text if len(text) <= _MAX_SEGMENT else text[: _MAX_SEGMENT - 3] + "...")
    where = ".".join(reversed(segments))
    return where if len(where) <= _MAX_PATH else "..." + where[-(_MAX_PATH - 3) :]
