"""The portal session: the cookie a link is exchanged for, and the checks of every request.

`viewer` admits a request with a live session (else 401); `checked` also checks that a
POST comes from the portal's own pages (its Origin and Sec-Fetch-Site, when the browser
sends them) and carries the session's CSRF token (else 403); `posted` then refuses every
change of a read-only session (403). All give the route the tenant's theme, so its pages
and refusals carry the tenant's CSP.

The cookie is `SameSite=Strict`, except for a tenant whose theme lets other sites frame
the portal (`frame_ancestors`): a Strict or Lax cookie is never sent inside a frame of
another site, so there it is `SameSite=None; Secure; Partitioned` (CHIPS: the browser
keeps it for that one embedding site only). CSRF protection never relies on SameSite:
the token and the origin checks above apply to every POST in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError
from hookline.api.in_flight import hold
from hookline.api.public_url import over_https
from hookline.api.tenant_limits import admit_request
from hookline.services import portal_themes
from hookline.services.audit import Actor
from hookline.services.portal_links import LinkRefused, PortalSession, session_of
from hookline.services.portal_themes import Theme

COOKIE = "hookline_portal"
MAX_FORM_FIELDS = 50
MAX_FIELD_CHARS = 4096


class Refused(Exception):
    """A portal request refused with an HTML page (`status_code` and a message)."""

    def __init__(
        self,
        status_code: int,
        message: str,
        theme: Theme | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.theme = theme
        self.headers = headers or {}
        self.code = code  # an API refusal's code (a limit's 429), for its metric

    @classmethod
    def of(cls, error: ApiError, theme: Theme | None) -> Refused:
        """The page for an API refusal (a limit's 429): its status, headers and code kept."""
        return cls(error.status_code, error.message, theme, error.headers, error.code)


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


def _cookie(value: str, expires_at: datetime, *, embedded: bool, secure: bool) -> str:
    # Written out: Python's cookie module knows no `Partitioned` before 3.14. The session
    # token holds URL-safe characters only, nothing a cookie value must quote.
    parts = [f"{COOKIE}={value}", "Path=/portal", "HttpOnly"]
    parts.append(f"Expires={format_datetime(expires_at.astimezone(UTC), usegmt=True)}")
    if embedded:
        parts += ["Secure", "SameSite=None", "Partitioned"]
    else:
        parts += [*(["Secure"] if secure else []), "SameSite=Strict"]
    return "; ".join(parts)


def set_cookie(
    response: Response, request: Request, token: str, expires_at: datetime, *, embedded: bool
) -> None:
    """The session cookie: Strict, or for an embeddable portal None + Partitioned; `Secure`
    whenever browsers reach the portal over https (`HOOKLINE_PUBLIC_URL` behind a proxy)."""
    secure = over_https(request, request.app.state.services.settings)
    response.headers.append(
        "set-cookie", _cookie(token, expires_at, embedded=embedded, secure=secure)
    )


def clear_cookie(response: Response, request: Request) -> None:
    """Remove the session cookie, in both modes: the theme may have changed since it was set,
    and a partitioned cookie is removed only by a partitioned Set-Cookie."""
    gone = datetime(1970, 1, 1, tzinfo=UTC)
    secure = over_https(request, request.app.state.services.settings)
    for embedded in (False, True):
        response.headers.append("set-cookie", _cookie("", gone, embedded=embedded, secure=secure))


def _load(services: Services, request: Request, token: str | None) -> tuple[PortalSession, Theme]:
    """The session and its tenant's theme, once the request holds one of the tenant's
    `max_concurrent_requests` places and is counted against its `requests_per_s`, as its
    API keys' requests are: a receiver holding a link shares the API's threads and database
    with every tenant too (429 beyond either)."""
    address = request.client.host if request.client else None
    unknown_allowed(services, address, token or "")
    with services.sessionmaker() as session:
        try:
            who = session_of(session, token)
            services.misses.found(token or "")
        except LinkRefused as exc:
            if exc.tenant_id is None:  # no such session: a miss of this address
                services.misses.charge(address)
            # The tenant's theme on the refusal too: inside the tenant's iframe, a page
            # that forbids framing would show nothing at all.
            theme = portal_themes.get(session, exc.tenant_id) if exc.tenant_id else None
            raise Refused(401, str(exc), theme) from None
        theme = portal_themes.get(session, who.tenant_id)
    try:
        hold(services, request.state, who.tenant_id)
        admit_request(services, who.tenant_id)
    except ApiError as exc:
        raise Refused.of(exc, theme) from None
    return who, theme


def unknown_allowed(services: Services, address: str | None, credential: str) -> None:
    """Refuse (429, before any query) an address that has had its share of unknown
    sessions, links and keys this second, unless `credential` was found before
    (`hookline/api/misses.py`)."""
    try:
        services.misses.check(address, credential)
    except ApiError as exc:
        raise Refused.of(exc, None) from None


async def viewer(request: Request, services: Services = Depends(get_services)) -> Viewer:
    who, theme = await run_in_threadpool(_load, services, request, request.cookies.get(COOKIE))
    host = request.client.host if request.client else None
    return Viewer(who, theme, host)


def from_this_site(request: Request) -> bool:
    """Whether a POST comes from the portal's own pages, as far as the browser says: its
    `Origin` names this host, and its `Sec-Fetch-Site` is same-origin. A header the client
    did not send proves nothing either way (the CSRF token still has to match)."""
    origin = request.headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.netloc != request.headers.get("host"):
            return False  # another site, or "null" (a sandboxed frame, a data: URL)
    fetch_site = request.headers.get("sec-fetch-site")
    return fetch_site is None or fetch_site in ("same-origin", "none")


async def checked(request: Request, seen: Viewer = Depends(viewer)) -> Posted:
    """A form the session sent: from this site, with the session's CSRF token."""
    if not from_this_site(request):
        raise Refused(403, "the form was sent from another site", seen.theme)
    form = await request.form(max_fields=MAX_FORM_FIELDS, max_files=0)
    token = form.get("csrf")
    if not seen.session.csrf_ok(token if isinstance(token, str) else None):
        raise Refused(403, "the form's CSRF token is missing or wrong: reload the page", seen.theme)
    if any(isinstance(v, str) and len(v) > MAX_FIELD_CHARS for v in form.values()):
        raise Refused(422, f"a field is longer than {MAX_FIELD_CHARS} characters", seen.theme)
    return Posted(seen, form)


async def posted(form: Posted = Depends(checked)) -> Posted:
    """A change: a checked form (`checked`), and the manage scope."""
    if not form.viewer.session.can_manage:
        raise Refused(403, "this portal link may only look, not change anything", form.viewer.theme)
    return form
