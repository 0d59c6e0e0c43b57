"""The key canary: a known text sealed under `HOOKLINE_SECRET_KEY`, opened at every start.

A process whose key ring cannot open it holds the wrong key: it refuses to start, before it
fails a delivery or, worse, seals a new secret under a key the others do not have. The
first start with a key writes the canary, but only if that key opens a secret already
stored (a mis-keyed first process must not set the wrong key in stone).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import SecretCanary, Subscription
from common.errors import ConfigurationError
from common.secretbox import SecretBox
from common.wire import utcnow

CANARY_ID = 1
CANARY_TEXT = "hookline secret canary v1"
WRONG_KEY = (
    "HOOKLINE_SECRET_KEY cannot open the secrets stored in this database: it is not the key "
    "they were sealed with (to change keys, list the new key first and the old one after "
    "it, comma-separated, then run `hookline secrets rewrap`)"
)


def check(sessions: sessionmaker[Session], box: SecretBox) -> None:
    """Open the canary, writing it first if there is none; `ConfigurationError` (one line)
    when this key ring is not the database's."""
    with sessions() as session:
        row = session.get(SecretCanary, CANARY_ID)
        sample = None
        if row is None:
            sample = session.scalars(select(Subscription.secret_enc).limit(1)).first()
    if row is not None:
        _expect_opens(box, row.token)
        return
    if sample is not None:
        _expect_opens(box, sample, text=None)
    try:
        with sessions() as session, session.begin():
            session.add(
                SecretCanary(id=CANARY_ID, token=box.seal(CANARY_TEXT), created_at=utcnow())
            )
    except IntegrityError:  # another process wrote it at the same moment: open theirs
        with sessions() as session:
            _expect_opens(box, session.get_one(SecretCanary, CANARY_ID).token)


def _expect_opens(box: SecretBox, token: str, text: str | None = CANARY_TEXT) -> None:
    try:
        opened = box.open(token)
    except ConfigurationError:
        raise ConfigurationError(WRONG_KEY) from None
    if text is not None and opened != text:
        raise ConfigurationError(WRONG_KEY)
