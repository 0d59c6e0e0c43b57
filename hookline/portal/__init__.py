"""The receivers' portal, served under `/portal` by the API process: one tenant's customer
manages its endpoints and reads its deliveries, signed in by a link (docs/portal.md).

A sub-application of its own, so its session, CSRF checks and security headers apply to
its pages only, and its refusals are HTML pages rather than the API's JSON errors.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from hookline.api.deps import Services
from hookline.api.errors import count_refusal
from hookline.portal import catalog, deliveries, endpoints, entry, manage
from hookline.portal.session import Refused
from hookline.portal.web import HERE, refusal, secure


class _Assets(StaticFiles):
    """The portal's CSS and JS, with the portal's headers (cacheable: they are files)."""

    async def get_response(self, path: str, scope):  # type: ignore[no-untyped-def]
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "public, max-age=300"
        return secure(response)


def create_portal(services: Services) -> FastAPI:
    portal = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    portal.state.services = services
    for module in (entry, endpoints, manage, deliveries, catalog):
        portal.include_router(module.router)
    portal.mount("/static", _Assets(directory=str(HERE / "static")), name="static")

    @portal.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        count_refusal(services.metrics, exc.status_code, exc.code)
        answer = refusal(request, exc.status_code, exc.message, exc.theme)
        answer.headers.update(exc.headers)
        return answer

    @portal.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # Names the field only: the value may be what an attacker put in the address.
        fields = sorted({str(error["loc"][-1]) for error in exc.errors() if error.get("loc")})
        return refusal(request, 422, f"not a valid value: {', '.join(fields) or 'the request'}")

    @portal.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # 404, 405, and 400 for a body Starlette cannot parse (a multipart form with a file).
        messages = {404: "there is no such page", 405: "this page does not take that request"}
        return refusal(request, exc.status_code, messages.get(exc.status_code, "bad request"))

    return portal
