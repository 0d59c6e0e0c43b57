"""Replay, beside the delivery engine: re-enqueue chosen dead letters as a job with a fixed
set, run it in confirmed batches under a lease, and resume it when its runner died.

The shell (`hookline`) imports from here only; the modules behind it are `jobs` (plan,
create, cancel), `runner` (the pipeline), `batch`/`rows` (the row states; `rows_pg` is the
PostgreSQL fast path), `copies` (the messages), `lease` and `resume`.
"""

from dispatcher.replay.jobs import DEFAULT_RATE_PER_S, Plan, ReplayRefused, audit
from dispatcher.replay.jobs import cancel as cancel_job
from dispatcher.replay.jobs import create as create_job
from dispatcher.replay.jobs import get as get_job
from dispatcher.replay.jobs import plan as plan_replay
from dispatcher.replay.lease import JobBusy
from dispatcher.replay.resume import Resumer
from dispatcher.replay.runner import Runner

__all__ = [
    "DEFAULT_RATE_PER_S",
    "JobBusy",
    "Plan",
    "ReplayRefused",
    "Resumer",
    "Runner",
    "audit",
    "cancel_job",
    "create_job",
    "get_job",
    "plan_replay",
]
