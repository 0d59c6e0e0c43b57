"""Re-sealing every stored secret under the first key of `HOOKLINE_SECRET_KEY`.

Run after putting a new key in front of the ring (`new,old`): once it is done, nothing
needs the old key and it can be dropped. Covered: subscription secrets, previous secrets,
signing keys and static header values, the sealed fields of stored idempotent answers, and
the key canary. A batch of rows per transaction, keyset-paged, so
it runs beside live traffic. Each row is written only if it is still what was read (the
sealed values and, for subscriptions, `updated_at`): a secret rotated meanwhile is never
overwritten with the old one; such rows are counted as `changed` and a second run picks
them up. Values already sealed under the first key are left alone, so running it again
does nothing more. Plaintexts do not change, so `updated_at` is not touched and no cache
reloads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from common.db.canary import CANARY_ID
from common.db.models import IdempotencyRecord, SecretCanary, Subscription
from common.secretbox import SecretBox, is_sealed

BATCH_SIZE = 500
_SEALED_COLUMNS = ("secret_enc", "previous_secret_enc", "signing_key_enc")


@dataclass
class Rewrapped:
    """Rows re-sealed, rows already current, rows that changed under the run."""

    subscriptions: int = 0
    idempotency_keys: int = 0
    canary: int = 0
    current: int = 0
    changed: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def rewrap_all(
    sessions: sessionmaker[Session], box: SecretBox, *, batch_size: int = BATCH_SIZE
) -> Rewrapped:
    done = Rewrapped()
    _subscriptions(sessions, box, batch_size, done)
    _idempotency_keys(sessions, box, batch_size, done)
    with sessions() as session, session.begin():
        row = session.get(SecretCanary, CANARY_ID)
        token = box.rewrap(row.token) if row is not None else None
        if row is not None and token is not None:
            row.token = token
            done.canary += 1
    return done


def _same(column: InstrumentedAttribute[Any], value: Any) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def _subscriptions(
    sessions: sessionmaker[Session], box: SecretBox, batch_size: int, done: Rewrapped
) -> None:
    after = ""
    while True:
        with sessions() as session, session.begin():
            rows = session.scalars(
                select(Subscription)
                .where(Subscription.id > after)
                .order_by(Subscription.id)
                .limit(batch_size)
            ).all()
            for row in rows:
                sealed = {c: getattr(row, c) for c in _SEALED_COLUMNS}
                values = {c: box.rewrap(v) for c, v in sealed.items() if v is not None}
                changes: dict[str, Any] = {c: v for c, v in values.items() if v is not None}
                headers = _headers(box, row.headers or {})
                if headers is not None:
                    changes["headers"] = headers
                if not changes:
                    done.current += 1
                    continue
                guard = [_same(getattr(Subscription, c), v) for c, v in sealed.items()]
                result = session.execute(
                    update(Subscription)
                    .where(Subscription.id == row.id, Subscription.updated_at == row.updated_at)
                    .where(*guard)
                    .values(**changes)
                    .execution_options(synchronize_session=False)
                )
                if getattr(result, "rowcount", 0):
                    done.subscriptions += 1
                else:
                    done.changed += 1
        if len(rows) < batch_size:
            return
        after = rows[-1].id


def _headers(box: SecretBox, headers: dict[str, str]) -> dict[str, str] | None:
    """Static header values all sealed under the first key, or None if they already are
    (a value still in clear is sealed too)."""
    values = {k: (box.rewrap(v) if is_sealed(v) else box.seal(v)) for k, v in headers.items()}
    if all(v is None for v in values.values()):
        return None
    return {k: headers[k] if v is None else v for k, v in values.items()}


def _idempotency_keys(
    sessions: sessionmaker[Session], box: SecretBox, batch_size: int, done: Rewrapped
) -> None:
    after = ("", "")
    record = IdempotencyRecord
    while True:
        with sessions() as session, session.begin():
            rows = session.execute(
                select(record.scope, record.key, record.secrets_enc)
                .where(record.secrets_enc.is_not(None))
                .where(
                    (record.scope > after[0])
                    | ((record.scope == after[0]) & (record.key > after[1]))
                )
                .order_by(record.scope, record.key)
                .limit(batch_size)
            ).all()
            for scope, key, sealed in rows:
                token = box.rewrap(sealed)
                if token is None:
                    done.current += 1
                    continue
                result = session.execute(
                    update(record)
                    .where(record.scope == scope, record.key == key, record.secrets_enc == sealed)
                    .values(secrets_enc=token)
                )
                if getattr(result, "rowcount", 0):
                    done.idempotency_keys += 1
                else:
                    done.changed += 1
        if len(rows) < batch_size:
            return
        after = (rows[-1][0], rows[-1][1])
