"""`hookline replay start|status|cancel`: wiring only; jobs live in and run from
`dispatcher.replay`. The CLI runs a job in its own process, with a progress bar;
`hookline dispatcher` runs `replay_resumer`, which resumes jobs whose runner died.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.db.models import JOB_CANCELLED, JOB_COMPLETED, JOB_FAILED, ReplayJob
from common.service import install_stop_handlers
from common.settings import Settings
from common.transport import open_transport, topology
from dispatcher.replay import (
    DEFAULT_RATE_PER_S,
    JobBusy,
    Plan,
    ReplayRefused,
    Resumer,
    Runner,
    cancel_job,
    create_job,
    get_job,
    plan_replay,
)
from hookline.cli import options as o
from hookline.cli.dlq import actor, runtime
from hookline.runtime import Runtime

replay_app = typer.Typer(
    help="Replay dead letters, watch and cancel replay jobs.", no_args_is_help=True
)
console = Console()
FINISHED = (JOB_COMPLETED, JOB_CANCELLED, JOB_FAILED)


def replay_resumer(settings: Settings, rt: Runtime) -> Resumer:
    """The loop a long-running process (the dispatcher) runs to resume orphaned jobs."""
    return Resumer(
        lambda: open_transport(settings.broker_url),
        rt.sessionmaker,
        retry_tiers_s=settings.retry_tiers_s,
        publish_timeout_s=settings.publish_timeout_s,
        metrics=rt.metrics,
    )


def _job_json(job: ReplayJob) -> dict[str, object]:
    todo = max(0, job.total - job.done - job.failed - job.skipped)
    return {
        "id": job.id,
        "state": job.state,
        "total": job.total,
        "todo": todo,
        "done": job.done,
        "failed": job.failed,
        "skipped": job.skipped,
        "error": job.error,
        "filters": job.filters,
        "rate_per_s": job.rate_per_s,
        "actor": job.actor,
    }


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "{task.fields[state]}  failed {task.fields[failed]}  skipped {task.fields[skipped]}"
        ),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _run(rt: Runtime, job_id: str, output: str) -> ReplayJob:
    rt.transport.declare(topology.build(rt.settings.retry_tiers_s))
    stop = threading.Event()
    install_stop_handlers(stop)  # SIGTERM: finish the batch, leave the job resumable
    with _progress() as bar:
        task = bar.add_task(job_id, total=None, state="running", failed=0, skipped=0)

        def show(job: ReplayJob) -> None:
            bar.update(
                task,
                total=job.total,
                completed=job.done + job.failed + job.skipped,
                state=job.state,
                failed=job.failed,
                skipped=job.skipped,
            )

        runner = Runner(
            rt.transport,
            rt.sessionmaker,
            job_id,
            metrics=rt.metrics,
            on_progress=show,
            publish_timeout_s=rt.settings.publish_timeout_s,
        )
        try:
            job = runner.run(stop)
        except JobBusy as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(3) from None
        show(job)
    if output == "json":
        typer.echo(o.dump(_job_json(job)))
    else:
        console.print(
            f"job {job.id}: [bold]{job.state}[/bold] — {job.done} sent, "
            f"{job.failed} failed, {job.skipped} skipped of {job.total}"
        )
    return job


@replay_app.command("start")
def replay_start(
    tenant: o.Tenant = None,
    subscription: o.SubscriptionOpt = None,
    event_type: o.EventType = None,
    reason: o.Reason = None,
    status_class: o.StatusClassOpt = None,
    since: o.Since = None,
    until: o.Until = None,
    ids_from: Annotated[
        Path | None,
        typer.Option("--ids-from", help="Delivery ids, one a line (or `dlq list -o json`)."),
    ] = None,
    dry_run: o.DryRun = False,
    everything: o.All = False,
    yes: o.Yes = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replay deliveries of paused/disabled subscriptions.")
    ] = False,
    rate: Annotated[
        str, typer.Option("--rate", help="Copies per second (N or N/s), or unlimited.")
    ] = f"{DEFAULT_RATE_PER_S:g}/s",
    resume: Annotated[
        str | None, typer.Option("--resume", help="Resume this job (killed or failed).")
    ] = None,
    output: o.OutputOpt = "table",
) -> None:
    """Re-send dead letters with their original webhook-id; the set is fixed at the start."""
    rt = runtime()
    try:
        if resume is not None:
            job = _run(rt, resume, output)
            raise typer.Exit(0 if job.state == JOB_COMPLETED else 1)
        dead = o.dead_filter(
            tenant=tenant,
            subscription=subscription,
            event_type=event_type,
            reason=reason,
            status_class=status_class,
            since=since,
            until=until,
            ids=o.read_ids(ids_from),
        )
        rate_per_s = o.parse_rate(rate)
        with rt.sessionmaker() as session:
            plan = plan_replay(session, dead)
        _show_plan(plan, output, dry_run)
        if dry_run:
            return
        if not dead.narrows and not everything:
            console.print("[red]refused:[/red] no filter given; name what to replay, or --all")
            raise typer.Exit(2)
        if plan.summary.total == 0:
            console.print("nothing to replay")
            return
        if (plan.paused or plan.disabled) and force:
            console.print(f"[yellow]--force:[/yellow] {plan.force_note}")
        if not yes and not typer.confirm(f"Replay {plan.summary.total} dead deliveries at {rate}?"):
            raise typer.Exit(1)
        with rt.sessionmaker() as session, session.begin():
            try:
                job, _ = create_job(
                    session,
                    dead,
                    actor=actor(),
                    rate_per_s=rate_per_s,
                    everything=everything,
                    force=force,
                )
            except ReplayRefused as exc:
                console.print(f"[red]{exc}[/red]")
                raise typer.Exit(2) from None
            job_id = job.id
        console.print(f"replay job [bold]{job_id}[/bold] ({job.total} deliveries)")
        job = _run(rt, job_id, output)
        raise typer.Exit(0 if job.state == JOB_COMPLETED else 1)
    finally:
        rt.close()


def _show_plan(plan: Plan, output: str, dry_run: bool) -> None:
    if output == "json" and dry_run:
        typer.echo(o.dump({"dry_run": True, **plan.to_json(), "note": plan.force_note}))
        return
    if output == "json":
        return
    s = plan.summary
    console.print(f"[bold]{s.total}[/bold] dead deliveries match")
    for reason, count in s.by_reason.items():
        console.print(f"  reason {reason}: {count}")
    for subscription_id, count in list(s.by_subscription.items())[:10]:
        console.print(f"  subscription {subscription_id}: {count}")
    if s.sample_ids:
        console.print("  sample ids: " + " ".join(s.sample_ids))
    if plan.force_note:
        console.print(f"[yellow]paused/disabled:[/yellow] {plan.force_note}")
    if dry_run:
        console.print("dry run: nothing was changed")


@replay_app.command("status")
def replay_status(
    job_id: Annotated[str, typer.Argument(help="Replay job id (rpl_...).")],
    watch: Annotated[bool, typer.Option(help="Follow with a live progress bar.")] = True,
    output: o.OutputOpt = "table",
) -> None:
    """A job's state and counts; follows it with a progress bar until it finishes."""
    rt = runtime()
    try:
        job = _load(rt, job_id)
        if output == "json" or not watch or job.state in FINISHED:
            if output == "json":
                typer.echo(o.dump(_job_json(job)))
            else:
                console.print(o.dump(_job_json(job)))
            return
        with _progress() as bar:
            task = bar.add_task(job_id, total=job.total, state=job.state, failed=0, skipped=0)
            while True:
                job = _load(rt, job_id)
                bar.update(
                    task,
                    completed=job.done + job.failed + job.skipped,
                    total=job.total,
                    state=job.state,
                    failed=job.failed,
                    skipped=job.skipped,
                )
                if job.state in FINISHED:
                    break
                time.sleep(0.5)
    finally:
        rt.close()


def _load(rt: Runtime, job_id: str) -> ReplayJob:
    with rt.sessionmaker() as session:
        job = get_job(session, job_id)
    if job is None:
        console.print(f"[red]no replay job {job_id}[/red]")
        raise typer.Exit(1)
    return job


@replay_app.command("cancel")
def replay_cancel(job_id: Annotated[str, typer.Argument(help="Replay job id.")]) -> None:
    """Stop a job after its current batch (what was sent stays sent)."""
    rt = runtime()
    try:
        with rt.sessionmaker() as session, session.begin():
            job = get_job(session, job_id)
            if job is None:
                console.print(f"[red]no replay job {job_id}[/red]")
                raise typer.Exit(1)
            job = cancel_job(session, job, actor=actor())
    finally:
        rt.close()
    console.print(f"job {job.id}: {job.state}")
