"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from common.transport import topology
from hookline.api.deps import Services, get_services
from hookline.api.errors import RETRY_AFTER_S, ApiError, documented
from hookline.api.schemas import Health

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive (it does not check dependencies: see `/readyz`)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=documented(503))
def readyz(services: Services = Depends(get_services)) -> Health:
    """The database answers and the broker is reachable, so requests can succeed."""
    problems = []
    # A probe must answer "not ready", whatever the failure: any exception counts.
    try:
        with services.sessionmaker() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("readiness: database check failed", extra={"error": type(exc).__name__})
        problems.append("database unreachable")
    try:
        services.producer.declare_topology()
        services.transport.queue_depth(topology.EVENTS)
    except Exception as exc:
        log.warning("readiness: broker check failed", extra={"error": type(exc).__name__})
        problems.append("broker unreachable")
    if problems:
        raise ApiError(
            503, "not_ready", "not ready: " + ", ".join(problems),
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )  # fmt: skip
    return Health(status="ready")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics(services: Services = Depends(get_services)) -> Response:
    """Every `hookline_*` metric of this process."""
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
