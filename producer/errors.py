"""The errors the producer SDK raises besides the transport's own."""

from __future__ import annotations

from pydantic import ValidationError

from common.errors import HooklineError


class InvalidEvent(HooklineError, ValueError):
    """An event does not fit the wire model; nothing was published."""

    @classmethod
    def from_validation(cls, exc: ValidationError, *, where: str = "") -> InvalidEvent:
        """One readable line per problem, naming the field but never echoing its value."""
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(part) for part in error["loc"]) or "event"
            problems.append(f"{field}: {error['msg']}")
        prefix = f"invalid event{where}: "
        return cls(prefix + "; ".join(problems))
