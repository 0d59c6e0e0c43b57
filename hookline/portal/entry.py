"""Entering the portal: a link's token is exchanged for the session cookie, and the page
that answers moves the browser on to the portal, so the token leaves the address bar.

The cookie is SameSite=Strict: a browser does not send it on a navigation that began on
another site (a link in an e-mail), not even after a redirect. The answer is therefore a
small page whose meta refresh (a same-site navigation) opens the portal.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from hookline.api.deps import Services, get_services
from hookline.portal.session import Refused, Viewer, set_cookie, viewer
from hookline.portal.web import PREFIX, page, secure
from hookline.services.portal_links import LinkRefused, exchange

router = APIRouter()


def _exchange(services: Services, token: str, source_ip: str | None) -> tuple[str, object]:
    with services.sessionmaker() as session, session.begin():
        link, session_token = exchange(session, token, source_ip=source_ip)
        return session_token, link.expires_at


@router.get("/open")
async def open_link(
    request: Request,
    token: str = Query(default="", max_length=200),
    services: Services = Depends(get_services),
) -> Response:
    host = request.client.host if request.client else None
    try:
        session_token, expires_at = await run_in_threadpool(_exchange, services, token, host)
    except LinkRefused as exc:
        message = f"{exc}. Ask the service that sent you the link for a new one."
        raise Refused(401, message) from None
    response = page(request, "opening.html", {"title": "Opening the portal"})
    set_cookie(response, request, session_token, expires_at)  # type: ignore[arg-type]
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
