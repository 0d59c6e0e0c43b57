"""The HTTP API: control plane (tenants, keys, subscriptions, deliveries) and event ingest.

The application is built by `hookline.api.app.create_app`. This package imports nothing
on its own, so the services may use the API's input models (`schemas.py`) without
pulling in the routes that call them.
"""
