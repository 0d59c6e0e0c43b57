"""Liveness, readiness and the Prometheus scrape endpoint.

`/healthz` and `/readyz` are coroutines that use no thread of the request pool: a probe
must answer while tenants' requests hold every worker thread (a liveness probe that times
out restarts the pod). Readiness checks run on the `ReadyProbe`'s own threads.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from common.transport import Transport, topology
from hookline.api.deps import Services, get_services
from hookline.api.errors import RETRY_AFTER_S, ApiError, documented
from hookline.api.readiness import Check
from hookline.api.schemas import Health
from producer import Producer

router = APIRouter(tags=["operations"])


def readiness_checks(
    sessions: sessionmaker[Session], transport: Transport, producer: Producer
) -> dict[str, Check]:
    """The database answers; the broker answers, with Hookline's topology declared."""

    def database() -> None:
        with sessions() as session:
            session.execute(text("SELECT 1"))

    def broker() -> None:
        producer.declare_topology()
        transport.queue_depth(topology.EVENTS)

    return {"database": database, "broker": broker}


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (it does not check dependencies: see `/readyz`)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=documented(503))
async def readyz(services: Services = Depends(get_services)) -> Health:
    """The database answers and the broker is reachable, so requests can succeed."""
    problems = await services.ready.problems()
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
