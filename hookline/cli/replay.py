"""`hookline replay start|status|cancel`: wiring only; jobs live in and run from
`dispatcher.replay`. In the direct mode the CLI runs a job (a new one, or one it resumes) in
its own process; through the API (`HOOKLINE_API_URL`) the API process runs it and the CLI
follows it: a progress bar either way. `hookline dispatcher` runs `replay_resumer`, which
resumes jobs whose runner died.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.settings import Settings
from common.transport import open_transport
from dispatcher.replay import DEFAULT_RATE_PER_S, Resumer
from hookline.cli import backend, render
from hookline.cli import options as o
from hookline.cli.dlq import query
from hookline.runtime import Runtime

replay_app = typer.Typer(
    help="Replay dead letters, watch and cancel replay jobs.", no_args_is_help=True
)
console = Console()
Json = dict[str, Any]
# What a job's JSON shows, in this order, in both modes (the API's `ReplayJobOut`, trimmed).
JOB_FIELDS = ("id", "state", "total", "todo", "done", "failed", "skipped", "error",
              "filters", "rate_per_s", "actor")  # fmt: skip


def replay_resumer(settings: Settings, rt: Runtime) -> Resumer:
    """The loop a long-running process (the dispatcher) runs to resume orphaned jobs."""
    return Resumer(
        lambda: open_transport(settings.broker_url),
        rt.sessionmaker,
        retry_tiers_s=settings.retry_tiers_s,
        publish_timeout_s=settings.publish_timeout_s,
        metrics=rt.metrics,
        shards=settings.delivery_shards,
        share_per_s=settings.delivery_share_per_s,
    )


def _job_json(job: Json) -> Json:
    return {name: job.get(name) for name in JOB_FIELDS}


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


def _watch(job_id: str, follow: Callable[[str, Callable[[Json], None]], Json]) -> Json:
    """`follow` the job with a progress bar; its last state."""
    with _progress() as bar:
        task = bar.add_task(job_id, total=None, state="running", failed=0, skipped=0)

        def show(job: Json) -> None:
            bar.update(
                task,
                total=job["total"],
                completed=job["done"] + job["failed"] + job["skipped"],
                state=job["state"],
                failed=job["failed"],
                skipped=job["skipped"],
            )

        job = follow(job_id, show)
        show(job)
    return job


def _ended(job: Json, output: str) -> None:
    if output == "json":
        typer.echo(o.dump(_job_json(job)))
    else:
        console.print(
            f"job {job['id']}: [bold]{job['state']}[/bold] — {job['done']} sent, "
            f"{job['failed']} failed, {job['skipped']} skipped of {job['total']}"
        )
    raise typer.Exit(0 if job["state"] == "completed" else 1)


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
        str | None,
        typer.Option("--resume", help="Resume this job (stopped, killed or failed)."),
    ] = None,
    output: o.OutputOpt = "table",
) -> None:
    """Re-send dead letters with their original webhook-id; the set is fixed at the start."""
    filters = query(
        tenant=tenant, subscription_id=subscription, event_type=event_type, reason=reason,
        status_class=status_class, since=since, until=until,
    )  # fmt: skip
    ids = list(o.read_ids(ids_from))
    body = {**filters, "ids": ids, "all": everything, "force": force}
    body["rate_per_s"] = o.parse_rate(rate)
    with backend.session() as ops:
        if resume is not None:
            ops.resume(resume)  # taken over (or refused) before any progress is shown
            _ended(_watch(resume, ops.follow), output)
        plan = ops.replay({**body, "dry_run": True})
        _show_plan(plan, output, dry_run)
        if dry_run:
            return
        narrowed = ids or any(v for k, v in filters.items() if k != "tenant")
        if not narrowed and not everything:
            console.print("[red]refused:[/red] no filter given; name what to replay, or --all")
            raise typer.Exit(2)
        if plan["total"] == 0:
            console.print("nothing to replay")
            return
        if (plan["paused"] or plan["disabled"]) and force:
            console.print(f"[yellow]--force:[/yellow] {plan['note']}")
        if not yes and not typer.confirm(f"Replay {plan['total']} dead deliveries at {rate}?"):
            raise typer.Exit(1)
        job = ops.replay(body)
        console.print(f"replay job [bold]{job['id']}[/bold] ({job['total']} deliveries)")
        _ended(_watch(job["id"], ops.follow), output)


def _show_plan(plan: Json, output: str, dry_run: bool) -> None:
    if output == "json" and dry_run:
        typer.echo(o.dump(plan))
        return
    if output == "json":
        return
    console.print(f"[bold]{plan['total']}[/bold] dead deliveries match")
    for reason, count in plan["by_reason"].items():
        console.print(f"  reason {reason}: {count}")
    for subscription_id, count in list(plan["by_subscription"].items())[:10]:
        console.print(f"  subscription {subscription_id}: {count}")
    if plan["sample_ids"]:
        console.print("  sample ids: " + " ".join(plan["sample_ids"]))
    if plan["paused"] or plan["disabled"]:
        console.print(f"[yellow]paused/disabled:[/yellow] {plan['note']}")
    if dry_run:
        console.print("dry run: nothing was changed")


@replay_app.command("status")
def replay_status(
    job_id: Annotated[str, typer.Argument(help="Replay job id (rpl_...).")],
    watch: Annotated[bool, typer.Option(help="Follow with a live progress bar.")] = True,
    output: o.OutputOpt = "table",
) -> None:
    """A job's state and counts; follows it with a progress bar until it finishes."""
    with backend.session() as ops:
        job = ops.replay_job(job_id)
        if output == "json" or not watch or job["state"] in backend.FINISHED:
            shown = o.dump(_job_json(job))
            typer.echo(shown) if output == "json" else console.print(render.plain(shown))
            return
        _watch(job_id, lambda job, show: backend.poll(ops, job, show))


@replay_app.command("cancel")
def replay_cancel(job_id: Annotated[str, typer.Argument(help="Replay job id.")]) -> None:
    """Stop a job after its current batch (what was sent stays sent)."""
    with backend.session() as ops:
        job = ops.cancel_replay(job_id)
    console.print(f"job {job['id']}: {job['state']}")
