"""The portal session: the cookie a link is exchanged for, and the checks of every request.

`viewer` admits a request with a live session (else 401); `posted` also checks the form's
CSRF token (else 403) and, for a read-only session, refuses every change (403). Both give
the route the tenant's theme, so its pages and refusals carry the tenant's CSP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from hookline.api.deps import Services, get_services
from hookline.services import portal_themes
from hookline.services.audit import Actor
from hookline.services.portal_links import LinkRefused, PortalSession, session_of
from hookline.services.portal_themes import Theme

COOKIE = "hookline_portal"
MAX_FORM_FIELDS = 50
MAX_FIELD_CHARS = 4096


class Refused(Exception):
    """A portal request refused with an HTML page (`status_code` and a message)."""

    def __init__(self, status_code: int, message: str, theme: Theme | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.theme = theme


@dataclass(frozen=True)
class Viewer:
    session: PortalSession
    theme: Theme
    source_ip: str | None

    @property
    def actor(self) -> Actor:
        return Actor(self.session.actor_id, self.source_ip)


@dataclass(frozen=True)
class Posted:
    viewer: Viewer
    form: FormData

    def field(self, name: str) -> str:
        value = self.form.get(name)
        return value.strip() if isinstance(value, str) else ""


def set_cookie(response: Response, request: Request, token: str, expires_at: datetime) -> None:
    response.set_cookie(
        COOKIE,
        token,
        expires=expires_at,
        path="/portal",
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
    )


def _load(services: Services, token: str | None) -> tuple[PortalSession, Theme]:
    with services.sessionmaker() as session:
        who = session_of(session, token)
        return who, portal_themes.get(session, who.tenant_id)


async def viewer(request: Request, services: Services = Depends(get_services)) -> Viewer:
    try:
        who, theme = await run_in_threadpool(_load, services, request.cookies.get(COOKIE))
    except LinkRefused as exc:
        raise Refused(401, str(exc)) from None
    host = request.client.host if request.client else None
    return Viewer(who, theme, host)


async def posted(request: Request, seen: Viewer = Depends(viewer)) -> Posted:
    """A change: a valid CSRF token first, then the manage scope."""
    form = await request.form(max_fields=MAX_FORM_FIELDS, max_files=0)
    token = form.get("csrf")
    if not seen.session.csrf_ok(token if isinstance(token, str) else None):
        raise Refused(403, "the form's CSRF token is missing or wrong: reload the page", seen.theme)
    if not seen.session.can_manage:
        raise Refused(403, "this portal link may only look, not change anything", seen.theme)
    if any(isinstance(v, str) and len(v) > MAX_FIELD_CHARS for v in form.values()):
        raise Refused(422, f"a field is longer than {MAX_FIELD_CHARS} characters", seen.theme)
    return Posted(seen, form)
