"""The HTTP API: control plane (tenants, keys, subscriptions, deliveries) and event ingest."""

from hookline.api.app import create_app

__all__ = ["create_app"]
