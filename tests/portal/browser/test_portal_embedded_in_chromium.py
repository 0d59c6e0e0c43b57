"""The portal inside another site's iframe, in a real browser: a page served from
http://localhost:<port> (the platform's app) frames the portal served from
http://127.0.0.1:<port> (another site: a different host is a different site). With the
tenant's theme allowing that origin, the session cookie is SameSite=None; Secure;
Partitioned, and a customer signs in, changes an endpoint and signs out, all inside the
frame. Chromium accepts the Secure cookie over plain http here because localhost and
127.0.0.1 are potentially trustworthy origins; the test asserts it did, so a browser that
stops doing so fails it rather than passing by accident.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from html import escape
from typing import Any

import pytest
import requests

from tests.portal.browser.conftest import Stack, shoot
from tests.processes import free_port


class Parent:
    """The platform's page, on its own site, with the portal in an iframe."""

    def __init__(self) -> None:
        self.port = free_port()
        self.link = ""
        parent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (
                    "<!doctype html><html><head><title>Acme app</title></head><body>"
                    "<h1>Acme app: your webhooks</h1>"
                    f'<iframe id="portal" title="Webhooks" src="{escape(parent.link)}" '
                    'width="1180" height="760"></iframe></body></html>'
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.port}"  # another site than http://127.0.0.1


@pytest.fixture(scope="module")
def parent(stack: Stack) -> Iterator[Parent]:
    served = Parent()
    served.thread.start()
    theme = {"tenant_id": stack.tenant_id, "name": "Acme Webhooks", "primary_color": "#5b3cc4",
             "frame_ancestors": [served.origin]}  # fmt: skip
    answer = requests.put(
        f"{stack.url}/v1/portal/theme", json=theme, headers=stack.admin, timeout=10
    )
    assert answer.status_code == 200, answer.text
    endpoint = requests.post(
        f"{stack.url}/v1/tenants/{stack.tenant_id}/subscriptions",
        json={"url": f"{stack.receiver.url}/acme/webhooks", "event_types": ["order.*"],
              "description": "Order sync"},
        headers=stack.admin, timeout=10,
    )  # fmt: skip
    assert endpoint.status_code == 201, endpoint.text
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()


def test_the_portal_works_inside_another_sites_iframe(
    page: Any, stack: Stack, parent: Parent
) -> None:
    parent.link = stack.link(scope="manage")
    page.goto(f"{parent.origin}/")
    frame = page.frame_locator("#portal")
    frame.locator("h1", has_text="Endpoints").wait_for()  # signed in: the cookie came back
    [cookie] = [c for c in page.context.cookies() if c["name"] == "hookline_portal"]
    assert (cookie["sameSite"], cookie["secure"], cookie["httpOnly"]) == ("None", True, True)
    assert cookie.get("partitionKey") == "http://localhost", cookie  # kept for this site only
    frame.get_by_role("link", name="Order sync").click()
    frame.get_by_role("button", name="Pause").click()  # a POST from inside the frame
    frame.locator("#notice", has_text="Paused").wait_for()
    shoot(page, "16-embedded-in-another-site")
    frame.get_by_role("button", name="Resume").click()
    frame.locator("#notice", has_text="Resumed").wait_for()
    # The same browser on the portal's own address has no session: the cookie belongs to
    # the embedding site's partition.
    alone = page.context.new_page()
    answer = alone.goto(f"{stack.url}/portal/endpoints")
    assert answer is not None and answer.status == 401
    alone.close()
    frame.get_by_role("button", name="Sign out").click()
    frame.locator("h1", has_text="Signed out").wait_for()
    assert [c for c in page.context.cookies() if c["name"] == "hookline_portal"] == []


def test_a_page_not_in_the_theme_cannot_frame_the_portal(
    browser: Any, stack: Stack, parent: Parent
) -> None:
    link = stack.link(scope="read")
    other = f"http://localhost:{free_port()}"
    # Its own context: the refusal logs an error, which the `page` fixture forbids.
    context = browser.new_context()
    tab = context.new_page()
    tab.route(f"{other}/", lambda route: route.fulfill(
        status=200, content_type="text/html",
        body=f'<iframe id="portal" src="{escape(link)}"></iframe>',
    ))  # fmt: skip
    try:
        tab.goto(f"{other}/", wait_until="load")  # the parent's load waits for its frame
        # The browser put its error page in the frame instead of the portal (the portal
        # answered with `frame-ancestors` naming only the theme's origin).
        assert [frame.url for frame in tab.frames][1:] == ["chrome-error://chromewebdata/"]
    finally:
        context.close()
