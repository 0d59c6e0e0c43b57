"""JSON Schemas of event data: checked when a catalogue entry is saved, compiled for ingest.

Two libraries, each where it is good. `jsonschema` (the reference implementation) checks a
schema against its draft's meta-schema when it is saved and words what is wrong with it.
Ingest runs the schema compiled by `jsonschema_rs`: about 1 µs an event where the
reference implementation takes 150-250 µs, which a 30,000-events/s batch path cannot
afford. A schema is saved only once both accepted it, and its examples are checked with
the compiled validator, so what the catalogue shows is what ingest enforces.

Compiled validators never reach the network (`offline`: a `$ref` to a URL is refused when
saved, and would fail to compile), and patterns run on Rust's linear-time regex engine, so
a tenant's schema cannot make ingest wait on a host or on a backtracking pattern. Nor on its
own shape: a schema whose references expand to more than `MAX_SCHEMA_EXPANSION` subschemas
along one path into the data (`schema_expansion`) is refused when saved, and never
compiled for ingest if it was saved before that bound existed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import islice
from typing import Any

import jsonschema
import jsonschema_rs

from common import payload
from hookline.services.errors import Invalid
from hookline.services.schema_expansion import Unbounded, expanded_size

MAX_SCHEMA_BYTES = 64 * 1024  # JSON text of one schema
MAX_SCHEMA_DEPTH = 32  # nested objects and arrays
MAX_SCHEMA_EXPANSION = 10_000  # subschemas along one path, every $ref expanded (per value)
MAX_EXAMPLES = 10
MAX_EXAMPLE_BYTES = 16 * 1024
MAX_PATH_CHARS = 200  # of a problem's location, as answered
MAX_MESSAGE_CHARS = 300  # of a problem's text, as answered
_REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")
MASK = "(value)"

Validator = jsonschema_rs.Validator


class InvalidSchema(Invalid):
    """The JSON Schema itself is not one (or is too large, deep, costly, or reaches outside)."""

    code = "invalid_schema"


class InvalidExample(Invalid):
    """An example does not fit the entry's schema."""

    code = "invalid_example"


def _depth(value: Any, limit: int) -> int:
    """How deep `value` nests, counting no further than `limit + 1` (iteratively: a hostile
    document must not be able to exhaust the stack)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if not isinstance(node, dict | list):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = node.values() if isinstance(node, dict) else node
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _references(schema: Any) -> Iterable[str]:
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _REFERENCES and isinstance(value, str):
                    yield value
                pending.append(value)
        elif isinstance(node, list):
            pending.extend(node)


def _where(path: Iterable[Any], root: str) -> str:
    where = ".".join([root, *(str(step) for step in path)])
    return where if len(where) <= MAX_PATH_CHARS else where[: MAX_PATH_CHARS - 3] + "..."


def _bounded(message: str) -> str:
    line = message.splitlines()[0] if message else "invalid"
    return line if len(line) <= MAX_MESSAGE_CHARS else line[: MAX_MESSAGE_CHARS - 3] + "..."


def size_of(document: Any) -> int:
    return len(json.dumps(document, separators=(",", ":")).encode())


def compile_schema(schema: dict[str, Any]) -> Validator:
    """The validator ingest runs for `schema` (which `check_schema` accepted), or
    `InvalidSchema` if validating with it could take too many steps: the bound is checked
    here, so a schema stored before it existed cannot reach ingest either."""
    expansion(schema)
    # `mask`: an error names the place and the rule, never the value (docs/architecture.md,
    # "Input limits"), so neither an answer nor a log line can carry a tenant's data.
    return jsonschema_rs.validator_for(
        schema, offline=True, pattern_options=jsonschema_rs.RegexOptions(), mask=MASK
    )


def expansion(schema: dict[str, Any]) -> int:
    """How many subschemas `schema` expands to (`schema_expansion`), or `InvalidSchema` if
    that is past `MAX_SCHEMA_EXPANSION` or has no bound."""
    try:
        size = expanded_size(schema, MAX_SCHEMA_EXPANSION, payload.MAX_DEPTH)
    except Unbounded as exc:
        raise InvalidSchema(f"data_schema: {_bounded(str(exc))}") from None
    if size > MAX_SCHEMA_EXPANSION:
        raise InvalidSchema(
            f"data_schema: more than {MAX_SCHEMA_EXPANSION} subschemas once every $ref is "
            f"expanded, along one path into the data (recursion counted to "
            f"{payload.MAX_DEPTH} levels): validating one value could take as many steps"
        )
    return size


def check_schema(schema: Any) -> Validator:
    """`schema` compiled, or `InvalidSchema` saying where and why it is not acceptable."""
    if not isinstance(schema, dict):
        raise InvalidSchema("data_schema: must be a JSON object (a JSON Schema)")
    if size_of(schema) > MAX_SCHEMA_BYTES:
        raise InvalidSchema(f"data_schema: larger than {MAX_SCHEMA_BYTES} bytes of JSON")
    if _depth(schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise InvalidSchema(f"data_schema: nested deeper than {MAX_SCHEMA_DEPTH} levels")
    for reference in _references(schema):
        if not reference.startswith("#"):
            raise InvalidSchema(
                f"data_schema: only references inside the schema ('#/...') are allowed, "
                f"not {_bounded(reference)!r}"
            )
    meta = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    error = jsonschema.exceptions.best_match(islice(meta(meta.META_SCHEMA).iter_errors(schema), 50))
    if error is not None:
        raise InvalidSchema(
            f"{_where(error.absolute_path, 'data_schema')}: {_bounded(error.message)}"
        )
    try:
        return compile_schema(schema)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        # What the reference library accepts but ingest's engine cannot run (a pattern
        # with look-around, an unknown `$schema`): refused here, never at ingest.
        raise InvalidSchema(f"data_schema: {_bounded(str(exc))}") from None


def problem(validator: Validator, data: Any) -> str | None:
    """Why `data` breaks the schema (`data.path: message`, bounded), or None if it fits."""
    # `validate` stops at the first error; `iter_errors` builds every one before yielding
    # any, and each failing `anyOf` holds its branches' errors: seconds for a wide object.
    try:
        validator.validate(data)
    except jsonschema_rs.ValidationError as error:
        return f"{_where(error.instance_path, 'data')}: {_bounded(error.message)}"
    return None


def check_examples(validator: Validator | None, examples: list[Any]) -> None:
    """`InvalidExample` for the first example that is too large or breaks the schema."""
    if len(examples) > MAX_EXAMPLES:
        raise InvalidExample(f"examples: at most {MAX_EXAMPLES}")
    for index, example in enumerate(examples):
        if not isinstance(example, dict):
            raise InvalidExample(f"examples.{index}: must be a JSON object, as `data` is")
        if size_of(example) > MAX_EXAMPLE_BYTES:
            raise InvalidExample(f"examples.{index}: larger than {MAX_EXAMPLE_BYTES} bytes")
        if _depth(example, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
            raise InvalidExample(f"examples.{index}: nested deeper than {MAX_SCHEMA_DEPTH} levels")
        wrong = problem(validator, example) if validator is not None else None
        if wrong is not None:
            raise InvalidExample(f"examples.{index}: {wrong}")
