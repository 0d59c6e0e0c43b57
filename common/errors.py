"""The errors Hookline raises across package boundaries: a shallow tree, one line each."""


class HooklineError(Exception):
    """Base class for every error Hookline raises on purpose."""


class ConfigurationError(HooklineError):
    """A setting is missing or has a value that cannot work."""


class TransportError(HooklineError):
    """The message broker could not do what was asked."""


class ConnectionLostError(TransportError):
    """The connection to the broker dropped; unacked messages will be redelivered."""


class BrokerUnavailableError(ConnectionLostError):
    """The broker cannot be reached now; the transport keeps reconnecting, so retry later."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PublishError(TransportError):
    """The broker refused a publish (nack) or could not route it (returned)."""


class TopologyError(TransportError):
    """A queue or exchange is missing or was declared with other arguments."""


class DecodeError(HooklineError):
    """A message body is not a valid wire model; it goes to the poison queue."""


class UnsafeTargetError(HooklineError):
    """An outbound URL points somewhere Hookline refuses to send (SSRF guard)."""
