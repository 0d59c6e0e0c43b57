"""Rendering portal pages: the Jinja2 templates, and the headers every answer carries.

The Content-Security-Policy allows nothing but this origin (no inline script or style; the
theme's colour comes from `/portal/theme.css`), images also from the tenant's logo origin,
and framing only by the origins in the tenant's theme (`'none'` by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from hookline.services.portal_links import PortalSession
from hookline.services.portal_themes import Theme

PREFIX = "/portal"
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["prefix"] = PREFIX


def csp(theme: Theme | None = None) -> str:
    theme = theme or Theme()
    images = " ".join(["'self'", *([theme.logo_origin] if theme.logo_origin else [])])
    ancestors = " ".join(theme.frame_ancestors) or "'none'"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        f"img-src {images}; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        f"object-src 'none'; frame-ancestors {ancestors}"
    )


# `same-origin`: nothing of a portal address goes to another site, and the portal's own POSTs
# carry their real `Origin` (under `no-referrer` a browser sends `Origin: null` with every
# POST, which the origin check in `session.py` must refuse). The page that opens a link
# sends no referrer at all: its address holds the token.
REFERRER_POLICY = "same-origin"
NO_REFERRER = "no-referrer"


def security_headers(
    theme: Theme | None = None, *, referrer: str = REFERRER_POLICY
) -> dict[str, str]:
    """What every portal answer carries, `Cache-Control` aside (an asset may set its own)."""
    headers = {
        "Content-Security-Policy": csp(theme),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": referrer,
    }
    if not (theme and theme.frame_ancestors):
        headers["X-Frame-Options"] = "DENY"
    return headers


def secure(
    response: Response, theme: Theme | None = None, *, referrer: str = REFERRER_POLICY
) -> Response:
    """The headers of every portal answer (pages, errors, redirects, assets)."""
    response.headers.update(security_headers(theme, referrer=referrer))
    if "cache-control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    return response


def page(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    who: PortalSession | None = None,
    theme: Theme | None = None,
    status_code: int = 200,
    referrer: str = REFERRER_POLICY,
) -> Response:
    """A rendered page; with a session, its CSRF token and scope are in the context."""
    values = {
        "who": who,
        "theme": theme or Theme(),
        "csrf": who.csrf_token() if who else "",
        "referrer": referrer,
        **context,
    }
    response = templates.TemplateResponse(request, name, values, status_code=status_code)
    return secure(response, theme, referrer=referrer)


def refusal(
    request: Request, status_code: int, message: str, theme: Theme | None = None
) -> Response:
    """An error page (401: no session, 403: not allowed, 404, 409, 422, 429)."""
    titles = {401: "Sign-in needed", 403: "Not allowed", 404: "Not found", 409: "Not possible",
              429: "Too many requests"}  # fmt: skip
    title = titles.get(status_code, "Something is wrong")
    return page(
        request,
        "error.html",
        {"title": title, "message": message, "status": status_code},
        theme=theme,
        status_code=status_code,
    )
