"""The dispatcher: POSTs signed webhooks, classifies the answers, retries through the delay
queues, dead-letters what is exhausted, and records every attempt."""

from dispatcher.worker import Dispatcher, serve

__all__ = ["Dispatcher", "serve"]
