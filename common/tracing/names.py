"""The names of Hookline's spans and of their attributes: the contract of docs/operations.md
("Tracing"), in one place. OpenTelemetry's semantic conventions where one fits."""

from __future__ import annotations

# Spans, in the order a delivery meets them.
INGEST = "hookline.ingest"  # POST /v1/events[/batch] in the API (server)
PUBLISH = "hookline.publish"  # the Python SDK's confirmed publish (producer)
ROUTE = "hookline.route"  # one event routed: matched, stored, its deliveries published
ATTEMPT = "hookline.attempt"  # one attempt of one delivery: resolve, admit, POST, decide
SETTLE = "hookline.settle"  # the attempt recorded, its onward copy published, acked

# Attributes.
HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
STATUS_CODE = "http.response.status_code"
SERVER_ADDRESS = "server.address"  # the endpoint's host only: never its URL
ERROR_TYPE = "error.type"
BATCH_SIZE = "messaging.batch.message_count"
TENANT = "hookline.tenant.id"
EVENTS = "hookline.events"  # events in one ingest request or publish
EVENT_ID = "hookline.event.id"
EVENT_TYPE = "hookline.event.type"
DELIVERIES = "hookline.deliveries"  # delivery messages one routed event published
DELIVERY_ID = "hookline.delivery.id"
SUBSCRIPTION_ID = "hookline.subscription.id"
ATTEMPT_NUMBER = "hookline.attempt"
REPLAY = "hookline.replay"
OUTCOME = "hookline.outcome"  # success | retry | dead | deferred
DEAD_REASON = "hookline.dead_reason"
RETRY_DELAY_S = "hookline.retry.delay_s"
