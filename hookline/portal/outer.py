"""The portal's headers on the answers made before a request reaches the portal's app.

The API's outer layers answer some requests to `/portal` themselves: the size limit (413),
a NUL in the query (422), the redirect of `/portal` to `/portal/`. They know nothing of the
portal, so without this those answers went out with no CSP, no `X-Frame-Options` and no
`no-store`: docs/security.md promises them on every portal answer.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hookline.portal.web import PREFIX, security_headers

_CSP = b"content-security-policy"


def _portal(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class PortalHeaders:
    """ASGI middleware outside every layer that may answer for the portal. An answer the
    portal made (it carries a CSP, perhaps a tenant's) is left as it is."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _portal(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                if _CSP not in present:
                    wanted = {**security_headers(), "Cache-Control": "no-store"}
                    headers += [
                        (name.lower().encode(), value.encode())
                        for name, value in wanted.items()
                        if name.lower().encode() not in present
                    ]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
