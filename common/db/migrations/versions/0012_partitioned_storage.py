"""partitioned storage: events, deliveries and attempts by day on PostgreSQL

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 20:15:00

Issue 17: retention by dropping daily partitions instead of DELETEs. Each of the three
tables gets a `day` column (the event's day; see common/ids.py) and, on PostgreSQL,
becomes a table partitioned by RANGE (day) whose primary and unique keys include `day`.
Rows are copied: the old table is renamed, the new one created with the old one's
indexes, its partitions made for every day that has rows up to three days ahead, the rows
moved, the old table dropped. Services must be stopped; it takes about as long as copying
the three tables. Rows written before keep their ids (without time): lookups by id fall
back to every partition for them. SQLite gets the column only (plain tables).
Downgrade copies the rows back into plain tables.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from common.db import partitions

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# The day of a row already written, in UTC.
_DAY_OF = {
    "events": "(received_at AT TIME ZONE 'UTC')::date",
    "deliveries": "(created_at AT TIME ZONE 'UTC')::date",
    "attempts": "(created_at AT TIME ZONE 'UTC')::date",
}
_KEYS = {
    "events": ("pk_events", "PRIMARY KEY (tenant_id, id{day})"),
    "deliveries": ("pk_deliveries", "PRIMARY KEY (id{day})"),
    "attempts": ("pk_attempts", "PRIMARY KEY (id{day})"),
}
_UNIQUE = ("uq_deliveries_tenant_id", "UNIQUE (tenant_id, event_id, subscription_id{day})")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite_upgrade()
        return
    for table in partitions.TABLES:
        _rebuild(table, partitioned=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite_downgrade()
        return
    for table in partitions.TABLES:
        _rebuild(table, partitioned=False)


def _rebuild(table: str, *, partitioned: bool) -> None:
    bind = op.get_bind()
    indexes = bind.execute(
        sa.text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t AND indexname "
            "NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass))"
        ),
        {"t": table},
    ).all()
    sequence = bind.execute(
        sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}
    ).scalar()
    old = f"{table}_plain"
    op.execute(f"ALTER TABLE {table} RENAME TO {old}")
    for index_name, _ in indexes:
        op.execute(f"DROP INDEX {index_name}")
    for constraint in (_KEYS[table][0], _UNIQUE[0] if table == "deliveries" else None):
        if constraint:
            op.execute(f"ALTER TABLE {old} DROP CONSTRAINT {constraint}")
    if sequence:
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    day = ", day" if partitioned else ""
    if partitioned:
        op.execute(
            f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS, day date NOT NULL) "
            "PARTITION BY RANGE (day)"
        )
    else:
        storage = " WITH (fillfactor = 80)" if table == "deliveries" else ""
        op.execute(f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS){storage}")
        op.execute(f"ALTER TABLE {table} DROP COLUMN day")
    name, key = _KEYS[table]
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {key.format(day=day)}")
    if table == "deliveries":
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {_UNIQUE[0]} "
                   f"{_UNIQUE[1].format(day=day)}")  # fmt: skip
    columns = [c["name"] for c in sa.inspect(bind).get_columns(table)]
    listed = ", ".join(columns)
    if partitioned:
        today = datetime.now(UTC).date()
        first = bind.execute(sa.text(f"SELECT min({_DAY_OF[table]}) FROM {old}")).scalar()
        # From yesterday at least: an id may carry yesterday (`common.ids.ID_DAY_SLACK`).
        start: date = min(first or today, today - timedelta(days=1))
        for n in range((today - start).days + partitions.DEFAULT_AHEAD_DAYS + 1):
            partitions.create(bind, table, start + timedelta(days=n))
        source = ", ".join(c if c != "day" else _DAY_OF[table] for c in columns)
        op.execute(f"INSERT INTO {table} ({listed}) SELECT {source} FROM {old}")
    else:
        op.execute(f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {old}")
    for _, definition in indexes:
        op.execute(definition.replace(" ON ONLY ", " ON "))
    if sequence:
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY {table}.id")
    op.execute(f"DROP TABLE {old}")
    if partitioned:
        op.execute(f"ANALYZE {table}")


def _sqlite_upgrade() -> None:
    for table in partitions.TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("day", sa.Date(), nullable=True))
        column = "received_at" if table == "events" else "created_at"
        op.execute(f"UPDATE {table} SET day = substr({column}, 1, 10)")
        with op.batch_alter_table(table) as batch:
            batch.alter_column("day", existing_type=sa.Date(), nullable=False)
            if table == "deliveries":
                batch.drop_constraint(_UNIQUE[0], type_="unique")
                batch.create_unique_constraint(
                    _UNIQUE[0], ["tenant_id", "event_id", "subscription_id", "day"]
                )


def _sqlite_downgrade() -> None:
    for table in partitions.TABLES:
        with op.batch_alter_table(table) as batch:
            if table == "deliveries":
                batch.drop_constraint(_UNIQUE[0], type_="unique")
                batch.create_unique_constraint(
                    _UNIQUE[0], ["tenant_id", "event_id", "subscription_id"]
                )
            batch.drop_column("day")
