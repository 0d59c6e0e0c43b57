"""How the operations commands show rows: dicts for `-o json`, Rich tables otherwise.

What a table shows comes from tenants and receivers (a response body, a poisoned message,
a subscription's URL), so each cell is `plain`: Rich would read `[link=...]` in it as
markup, and a terminal would run the escape sequences in it (move the cursor, rewrite
what the operator reads, set a hyperlink or the clipboard). `-o json` escapes them anyway.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from common.db.models import PoisonMessage
from common.logs import inert
from hookline.cli import options as o

console = Console()


def dead_row(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "event_id": row.event_id,
        "webhook_id": row.webhook_id,
        "subscription_id": row.subscription_id,
        "event_type": row.event_type,
        "reason": row.dead_reason,
        "attempt_count": row.attempts,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "replay_count": row.replay_count,
        "died_at": row.finished_at,
    }


def poison_row(row: PoisonMessage) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "source_queue": row.source_queue,
        "reason": row.reason,
        "error": row.error,
        "body": row.body,
        "encoding": row.encoding,
        "received_at": row.received_at,
        "resubmitted_at": row.resubmitted_at,
    }


def plain(value: object) -> Text:
    """`value` as inert text: no markup, and every control character shown as its escape
    (`\\x1b`), never sent to the terminal."""
    return Text(inert(str(value)))


def table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(plain("" if row[c] is None else o.shown(row[c])[:80]) for c in columns))
    return table


def print_summary(counted: dict[str, Any], output: str) -> None:
    if output == "json":
        typer.echo(o.dump(counted))
        return
    console.print(f"[bold]{counted['total']}[/bold] dead letters")
    for title in ("by_reason", "by_subscription"):
        table = Table(title=title.replace("_", " "))
        table.add_column(title.removeprefix("by_"))
        table.add_column("count", justify="right")
        for key, count in counted[title].items():
            table.add_row(key, str(count))
        console.print(table)
    if counted["sample_ids"]:
        console.print("sample ids: " + " ".join(counted["sample_ids"]))
