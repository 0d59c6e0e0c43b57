"""Logging: JSON lines or console text, with ids bound per message and never secrets.

`HOOKLINE_LOG_FORMAT=json` writes one JSON object per line (for log shippers),
`console` a readable line with the context in brackets. A handler binds the ids of the
message it works on for everything logged meanwhile:

    with logs.bound(event_id=..., delivery_id=..., subscription_id=...):
        ...  # every record in this thread (or asyncio task) carries the three ids

Secrets never reach the output: context keys that name a secret are dropped, and values
that look like one (webhook secrets, API keys, signatures, bearer tokens, passwords in
URLs) are masked wherever they appear, in the message, the context or a traceback.

Nor does a terminal's escape sequence, or a line of its own: what is logged may quote a
tenant or a receiver (an error's text), and a console line shows every control character
as its escape (`inert`), newlines included, so a record stays one line that says what it
is. JSON escapes them by itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

# What must not reach an operator's terminal as it is: C0 and C1 controls (an escape
# sequence starts with ESC, or with CSI in C1; a carriage return overwrites the line) and
# the marks that reorder text. Tab stays; a newline stays only where lines are expected.
_BIDI = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
_UNSAFE_IN_A_LINE = re.compile(rf"[\x00-\x08\x0a-\x1f\x7f-\x9f{_BIDI}]")
# Attributes every LogRecord has; anything else was passed through `extra=` and is context.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# The ids a handler binds; a bounded set of names keeps the output greppable.
BINDABLE = ("event_id", "delivery_id", "subscription_id", "tenant_id", "replay_id", "attempt")

_bound: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("hookline_log_ids")

_SECRET_KEY = re.compile(r"secret|signature|password|passwd|token|authorization|api_key|"
                         r"cookie", re.IGNORECASE)  # fmt: skip
_SECRET_VALUE = re.compile(
    r"whsec_[A-Za-z0-9+/=_-]+"  # webhook signing secrets
    r"|\bhl_[A-Za-z0-9_-]{8,}"  # API keys
    r"|\bv1a?,[A-Za-z0-9+/=]{16,}"  # webhook-signature values
    r"|(?i:bearer)\s+[^\s\"',]+"  # Authorization header values
)
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")
MASK = "[redacted]"


@contextlib.contextmanager
def bound(**ids: Any) -> Iterator[None]:
    """Attach `ids` (see `BINDABLE`) to every record logged inside the block."""
    unknown = set(ids) - set(BINDABLE)
    if unknown:
        raise ValueError(f"not a bindable log field: {sorted(unknown)}")
    token = _bound.set({**_bound.get({}), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _bound.reset(token)


def redact(text: str) -> str:
    """`text` with anything that looks like a secret masked."""
    return _URL_PASSWORD.sub(rf"\1{MASK}@", _SECRET_VALUE.sub(MASK, text))


def _context(record: logging.LogRecord) -> dict[str, Any]:
    """The bound ids, then the record's `extra=` fields, without secrets."""
    context: dict[str, Any] = dict(_bound.get({}))
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        context[key] = MASK if _SECRET_KEY.search(key) else value
    return {
        key: redact(value) if isinstance(value, str) else value for key, value in context.items()
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        entry.update(_context(record))
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=lambda value: redact(str(value)))


def inert(text: str, *, one_line: bool = False) -> str:
    """`text` with every control character shown as its escape (`\\x1b`), and every line
    break too for `one_line`: what a terminal shows of it, it cannot run or rewrite."""
    return (_UNSAFE_IN_A_LINE if one_line else _UNSAFE).sub(_escaped, text)


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in _context(record).items())
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: "
        line += redact(record.getMessage()) + (f"  [{context}]" if context else "")
        line = inert(line, one_line=True)
        if record.exc_info:
            line += "\n" + inert(redact(self.formatException(record.exc_info)))
        return line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted, not when configured:
    a CLI run inside a test runner (or anything that swaps stderr) must not leave the root
    logger holding a stream that is closed afterwards."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure(log_format: str = "console", level: str = "INFO") -> None:
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pika logs every connection hiccup at ERROR with tracebacks; our transport reports them.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
