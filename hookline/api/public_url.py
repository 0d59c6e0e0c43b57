"""Where browsers and clients reach the API: the address it writes into portal links, and
whether they reach it over https (the portal's cookie is then `Secure`).

Behind a proxy that ends TLS the API sees plain http, and it trusts no forwarded header
(`runtime.py`: a client could write one), so the operator says it once:
`HOOKLINE_PUBLIC_URL`. Unset, each request's own address is used (`hookline dev`, tests).
"""

from __future__ import annotations

from starlette.requests import Request

from common.settings import Settings


def public_base(request: Request, settings: Settings) -> str:
    """The API's base address, without a trailing slash."""
    return settings.public_url or str(request.base_url).rstrip("/")


def over_https(request: Request, settings: Settings) -> bool:
    """Whether browsers reach the API over https."""
    return public_base(request, settings).startswith("https://")
