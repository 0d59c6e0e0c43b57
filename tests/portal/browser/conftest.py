"""A real stack for the browser tests: the API on uvicorn (127.0.0.1), a router and a
dispatcher on threads, SQLite and the in-memory broker (what `hookline dev` runs), a real
receiver on 127.0.0.1 that echoes the verification challenge, and Debian's chromium driven
by Playwright. Playwright never downloads a browser here: without /usr/bin/chromium the
tests skip, and in CI (CI=true) they fail.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from common.settings import Settings
from hookline.receiver import Received, Receiver, Reply
from tests.api.support import ADMIN_TOKEN
from tests.dev_stack import dev_stack
from tests.services import require

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[3] / "docs" / "portal"


# What the demo tenant's catalogue describes (the portal's "Event types" page).
CATALOGUE = [
    {
        "name": "order.created",
        "description": "A customer placed an order. Sent once per order, after payment.",
        "group": "orders",
        "data_schema": {
            "type": "object",
            "required": ["order"],
            "properties": {
                "order": {"type": "integer", "description": "the order number"},
                "total": {"type": "number", "minimum": 0},
                "currency": {"type": "string", "enum": ["EUR", "USD"]},
            },
        },
        "examples": [{"order": 1042, "total": 99.5, "currency": "EUR"}],
    },
    {
        "name": "order.refunded",
        "description": "An order was refunded in full or in part.",
        "group": "orders",
        "data_schema": {
            "type": "object",
            "required": ["order", "amount"],
            "properties": {"order": {"type": "integer"}, "amount": {"type": "number"}},
        },
        "examples": [{"order": 1042, "amount": 20.0}],
    },
]


@dataclass
class Site:
    """A receiver whose answers a test switches between healthy and failing."""

    failing: bool = False
    received: list[Received] = field(default_factory=list)

    def respond(self, request: Received) -> Reply:
        body = json.loads(request.body or b"{}")
        if body.get("type") == "webhook.verification":
            return Reply(200, json.dumps({"challenge": body["challenge"]}).encode())
        self.received.append(request)
        if self.failing:
            return Reply(503, b'{"error": "the receiver is down for maintenance"}')
        return Reply(200, b'{"ok": true}')


@dataclass
class Stack:
    url: str
    receiver: Receiver
    site: Site
    tenant_id: str
    key: dict[str, str]

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def link(self, **body: Any) -> str:
        answer = requests.post(
            f"{self.url}/v1/portal/links",
            json={"tenant_id": self.tenant_id, **body},
            headers=self.admin,
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        url: str = answer.json()["url"]
        return url

    def publish(self, event_type: str, data: dict[str, Any]) -> None:
        answer = requests.post(
            f"{self.url}/v1/events", json={"type": event_type, "data": data},
            headers=self.key, timeout=10,
        )  # fmt: skip
        assert answer.status_code == 202, answer.text


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    path = tmp_path_factory.mktemp("portal") / "hookline.db"
    settings = Settings(
        database_url=f"sqlite:///{path}",
        broker_url="memory://",
        admin_token=ADMIN_TOKEN,
        allow_private_targets=True,
        allow_http=True,
        retry_schedule="1s,1s",
        circuit_open_s=1.0,
    )
    with dev_stack(settings) as (url, _):
        site = Site()
        receiver = Receiver(respond=site.respond).start()
        try:
            yield _prepared(url, receiver, site)
        finally:
            receiver.stop()


def _prepared(url: str, receiver: Receiver, site: Site) -> Stack:
    """A tenant with a portal theme and a catalogue, on the running stack."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    tenant = requests.post(f"{url}/v1/tenants", json={"name": "Acme"}, headers=admin, timeout=10)
    body = tenant.json()
    theme = {"name": "Acme Webhooks", "primary_color": "#5b3cc4"}
    themed = requests.put(
        f"{url}/v1/portal/theme", json={"tenant_id": body["id"], **theme}, headers=admin, timeout=10
    )
    assert themed.status_code == 200, themed.text
    key = {"Authorization": f"Bearer {body['api_key']}"}
    for entry in CATALOGUE:
        described = requests.post(
            f"{url}/v1/tenants/{body['id']}/event-types", json=entry, headers=admin, timeout=10
        )
        assert described.status_code == 201, described.text
    return Stack(url, receiver, site, body["id"], key)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require("chromium (apt-get install chromium)", Path(CHROMIUM).exists())
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())  # the confirm() of delete and rotate
    errors: list[str] = []
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    # A CSP violation (an inline script or style slipped in) or a script error shows here;
    # the 401 of a used link is the one error a test asks for.
    assert [e for e in errors if "401" not in e] == []


def shoot(page: Any, name: str) -> None:
    """Save the page to docs/portal/<name>.png when HOOKLINE_PORTAL_SCREENSHOTS=1."""
    if os.environ.get("HOOKLINE_PORTAL_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
