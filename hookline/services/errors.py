"""What a service refuses with; the routes map each to an HTTP answer, the CLI to a message."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the domain refuses; `code` is the stable name callers may show."""

    code = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    """No such resource for this tenant (another tenant's is not found either)."""

    code = "not_found"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")


class Conflict(ServiceError):
    """The resource's state, or another resource, does not allow the change."""

    code = "conflict"


class AtLimit(Conflict):
    """The tenant has as many of the resource as its limit allows."""

    code = "limit_reached"


class NotVerified(Conflict):
    """The endpoint has not passed the verification handshake."""

    code = "not_verified"


class Invalid(ServiceError):
    """The input breaks a rule the schema cannot state."""

    code = "validation_error"


class UnsafeTarget(ServiceError):
    """The URL points where webhooks may not go (the SSRF guard)."""

    code = "unsafe_target"
