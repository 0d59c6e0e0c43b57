"""A tenant's portal theme: the name, logo and colour its customers see, and the origins
that may frame the portal (CSP `frame-ancestors`; none by default).

Every value ends up in a page or a header, so each is checked against a narrow pattern
here: a logo or an origin cannot smuggle a quote, a space or a `;` into the CSP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from common.db.models import PortalTheme
from common.wire import utcnow
from hookline.services import audit, tenants
from hookline.services.audit import Actor
from hookline.services.errors import Invalid

MAX_NAME_CHARS = 80
MAX_URL_CHARS = 500
MAX_ANCESTORS = 10
# Each is used with `fullmatch`: with `match`, `$` also takes a value ending in "\n"
# (Python's `$` matches before a final newline), and a newline in the CSP header fails
# every portal page of the tenant.
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_ORIGIN = re.compile(
    r"https://[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?"
)
_LOCAL_ORIGIN = re.compile(r"http://(127\.0\.0\.1|localhost)(:\d{1,5})?")
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&()*+,=%]+")  # no quotes, spaces or ';'


@dataclass(frozen=True)
class Theme:
    name: str | None = None
    logo_url: str | None = None
    primary_color: str | None = None
    frame_ancestors: tuple[str, ...] = ()

    @property
    def logo_origin(self) -> str | None:
        if not self.logo_url:
            return None
        parts = urlsplit(self.logo_url)
        return f"{parts.scheme}://{parts.netloc}"


def _origin(value: str) -> str:
    if not (_ORIGIN.fullmatch(value) or _LOCAL_ORIGIN.fullmatch(value)):
        raise Invalid(
            "frame_ancestors: each must be an origin such as https://app.example.com "
            "(http only for 127.0.0.1 and localhost)"
        )
    return value


def _logo(value: str) -> str:
    parts = urlsplit(value)
    local = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
    if len(value) > MAX_URL_CHARS or not _URL_CHARS.fullmatch(value):
        raise Invalid(f"logo_url: a URL of at most {MAX_URL_CHARS} plain characters")
    if not (parts.scheme == "https" or local) or not parts.netloc:
        raise Invalid("logo_url: an https URL")
    _origin(f"{parts.scheme}://{parts.netloc}")
    return value


def check(
    *,
    name: str | None,
    logo_url: str | None,
    primary_color: str | None,
    frame_ancestors: list[str],
) -> Theme:
    """The theme, or `Invalid` naming the first bad field."""
    if name is not None and not 1 <= len(name.strip()) <= MAX_NAME_CHARS:
        raise Invalid(f"name: 1 to {MAX_NAME_CHARS} characters")
    if primary_color is not None and not _COLOR.fullmatch(primary_color):
        raise Invalid("primary_color: a colour such as #1f6feb")
    if len(frame_ancestors) > MAX_ANCESTORS:
        raise Invalid(f"frame_ancestors: at most {MAX_ANCESTORS} origins")
    return Theme(
        name=name.strip() if name else None,
        logo_url=_logo(logo_url) if logo_url else None,
        primary_color=primary_color.lower() if primary_color else None,
        frame_ancestors=tuple(_origin(o) for o in dict.fromkeys(frame_ancestors)),
    )


def get(session: Session, tenant_id: str) -> Theme:
    row = session.get(PortalTheme, tenant_id)
    if row is None:
        return Theme()
    return Theme(row.name, row.logo_url, row.primary_color, tuple(row.frame_ancestors))


def put(session: Session, tenant_id: str, theme: Theme, *, actor: Actor) -> Theme:
    """Replace the tenant's theme (the caller commits)."""
    tenants.get(session, tenant_id)
    row = session.get(PortalTheme, tenant_id) or PortalTheme(tenant_id=tenant_id)
    row.name, row.logo_url, row.primary_color = theme.name, theme.logo_url, theme.primary_color
    row.frame_ancestors = list(theme.frame_ancestors)
    row.updated_at = utcnow()
    session.add(row)
    audit.record(
        session, actor, action="portal_theme.updated",
        resource_type="tenant", resource_id=tenant_id, tenant_id=tenant_id,
        details={"frame_ancestors": list(theme.frame_ancestors)},
    )  # fmt: skip
    return theme
