"""The producer SDK: publish events to Hookline with broker confirms."""

from producer.client import Producer
from producer.errors import InvalidEvent

__all__ = ["InvalidEvent", "Producer"]
