"""Entering and leaving the portal: a link's token is exchanged for the session cookie, and
the page that answers moves the browser on to the portal, so the token leaves the address
bar; signing out ends the session for good.

The cookie is SameSite=Strict (unless the tenant's portal is embeddable, see `session.py`):
a browser does not send it on a navigation that began on another site (a link in an
e-mail), not even after a redirect. The answer is therefore a small page whose meta
refresh (a same-site navigation) opens the portal.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from hookline.api.deps import Services, get_services
from hookline.portal.calls import call
from hookline.portal.session import (
    Posted,
    Refused,
    Viewer,
    checked,
    clear_cookie,
    set_cookie,
    unknown_allowed,
    viewer,
)
from hookline.portal.web import NO_REFERRER, PREFIX, page, secure
from hookline.services import portal_links, portal_themes
from hookline.services.portal_links import LinkRefused, exchange
from hookline.services.portal_themes import Theme

router = APIRouter()


def _exchange(services: Services, token: str, source_ip: str | None) -> tuple[str, datetime, Theme]:
    unknown_allowed(services, source_ip, token)
    with services.sessionmaker() as session, session.begin():
        try:
            link, session_token = exchange(session, token, source_ip=source_ip)
        except LinkRefused as exc:
            if exc.tenant_id is None:  # no such link: a miss of this address
                services.misses.charge(source_ip)
            message = f"{exc}. Ask the service that sent you the link for a new one."
            # The tenant's theme, when the link is known: it may be inside the tenant's iframe.
            theme = portal_themes.get(session, exc.tenant_id) if exc.tenant_id else None
            raise Refused(401, message, theme) from None
        return session_token, link.expires_at, portal_themes.get(session, link.tenant_id)


@router.get("/open")
async def open_link(
    request: Request,
    token: str = Query(default="", max_length=200),
    services: Services = Depends(get_services),
) -> Response:
    host = request.client.host if request.client else None
    session_token, expires_at, theme = await run_in_threadpool(_exchange, services, token, host)
    # The tenant's frame rule from the start: this page may itself be inside its iframe.
    response = page(
        request, "opening.html", {"title": "Opening the portal"}, theme=theme, referrer=NO_REFERRER
    )
    embedded = bool(theme.frame_ancestors)
    set_cookie(response, request, session_token, expires_at, embedded=embedded)
    return response


@router.post("/signout")
async def sign_out(
    request: Request, form: Posted = Depends(checked), services: Services = Depends(get_services)
) -> Response:
    """End the session (a read-only one too): its cookie opens nothing from now on."""
    seen = form.viewer

    def run() -> None:
        with services.sessionmaker() as session, session.begin():
            portal_links.sign_out(session, seen.session.link_id, actor=seen.actor)

    await call(seen, run)
    # A page, not a redirect to one: with the tenant's theme, it may show in its iframe.
    response = page(request, "signed_out.html", {"title": "Signed out"}, theme=seen.theme)
    clear_cookie(response, request)
    return response


@router.get("/")
async def home() -> Response:
    return secure(RedirectResponse(f"{PREFIX}/endpoints", status_code=303))


@router.get("/theme.css")
async def theme_css(seen: Viewer = Depends(viewer)) -> Response:
    """The tenant's colour as a CSS variable: a file, as the CSP allows no inline style."""
    color = seen.theme.primary_color or "#1f6feb"  # checked: `#` and six hex digits
    body = f":root {{ --primary: {color}; }}\n"
    return secure(Response(body, media_type="text/css"), seen.theme)
