"""`hookline secrets`: the key ring's start-up check, and `rewrap` after a key change."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from sqlalchemy.exc import DBAPIError

from common import logs
from common.db import canary
from common.db.session import make_engine, make_sessionmaker
from common.errors import ConfigurationError
from common.secretbox import SecretBox, check_secret_key
from common.service import retry_database
from common.settings import Settings
from hookline.services.rewrap import BATCH_SIZE, rewrap_all

secrets_app = typer.Typer(
    help="Manage what is sealed under HOOKLINE_SECRET_KEY.", no_args_is_help=True
)
# A PostgreSQL that is still starting is waited for this long before the check gives up.
CANARY_WAIT_S = 30.0


def require_usable_key(settings: Settings) -> SecretBox:
    """The key ring, once it is strong enough and opens this database's canary (written by
    the first start); `ConfigurationError` with a one-line reason otherwise."""
    box = SecretBox(check_secret_key(settings.secret_key))
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        sessions = make_sessionmaker(engine)
        # A file never "starts up": an SQLite error (no table yet) is not worth waiting on.
        wait_s = 0.0 if engine.dialect.name == "sqlite" else CANARY_WAIT_S
        retry_database(lambda: canary.check(sessions, box), bound_s=wait_s)
    except DBAPIError as exc:
        raise ConfigurationError(
            f"cannot read the key canary ({type(exc.orig).__name__}): is the database "
            "reachable and migrated (`hookline migrate`)?"
        ) from None
    finally:
        engine.dispose()
    return box


@secrets_app.command("rewrap")
def rewrap(
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = BATCH_SIZE,
) -> None:
    """Re-seal every stored secret under the first key of HOOKLINE_SECRET_KEY.

    Put the new key first (HOOKLINE_SECRET_KEY=new,old), restart the services, run this,
    then drop the old key. Safe to run again and beside live traffic."""
    settings = Settings()
    logs.configure(settings.log_format, settings.log_level)
    try:
        box = require_usable_key(settings)
    except ConfigurationError as exc:
        typer.echo(f"refusing to run: {exc}", err=True)
        raise typer.Exit(2) from None
    engine = make_engine(settings.database_url)
    try:
        done = rewrap_all(make_sessionmaker(engine), box, batch_size=batch_size)
    finally:
        engine.dispose()
    typer.echo(json.dumps(done.to_json()))
