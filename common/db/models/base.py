"""The declarative base, naming convention and column helpers every model module uses."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, MetaData
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.db.types import UtcDateTime
from common.wire import utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON().with_variant(JSON(none_as_null=True), "postgresql")


def when_now() -> Mapped[datetime]:
    """A timestamp column set to the current UTC time when the row is written."""
    return mapped_column(UtcDateTime(), default=utcnow, nullable=False)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
