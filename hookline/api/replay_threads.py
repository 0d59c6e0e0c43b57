"""Who runs a replay job in an API process: a daemon thread per job, started by the routes
that start one (`POST /v1/replays`, a delivery's replay, a recovery, the portal's) or
resume one (`POST /v1/replays/{id}/resume`). The job's state lives in the database, under
the runner's lease: a thread that dies with its process leaves the job to a dispatcher's
resumer (docs/architecture.md section 7, "Who runs a job")."""

from __future__ import annotations

import logging
import threading

from fastapi import Request

from common.transport import topology
from dispatcher.replay import JobBusy, Runner
from hookline.api.deps import Services

log = logging.getLogger(__name__)


def replay_runner(services: Services, job_id: str) -> Runner:
    """A runner of the job in this process, on its broker connection."""
    return Runner(
        services.transport,
        services.sessionmaker,
        job_id,
        metrics=services.metrics,
        publish_timeout_s=services.settings.publish_timeout_s,
        shards=services.settings.delivery_shards,
        share_per_s=services.settings.delivery_share_per_s,
    )


def run_in_background(
    request: Request, services: Services, job_id: str, *, runner: Runner | None = None
) -> None:
    """Run the job on a daemon thread of this process (`app.state.replay_threads` keeps
    them, for tests to join). `runner`: one that already took the job's lease (a resume)."""
    runner = runner or replay_runner(services, job_id)

    def run() -> None:
        try:
            settings = services.settings
            services.transport.declare(
                topology.build(settings.retry_tiers_s, settings.delivery_shards)
            )
            runner.run()
        except JobBusy as exc:
            log.info("replay job not started here", extra={"job_id": job_id, "why": str(exc)})
        except Exception:
            log.exception("replay job crashed", extra={"job_id": job_id})

    thread = threading.Thread(target=run, name=f"replay-{job_id}", daemon=True)
    threads: dict[str, threading.Thread] = getattr(request.app.state, "replay_threads", {})
    request.app.state.replay_threads = threads
    threads[job_id] = thread
    thread.start()
