"""`hookline dev --demo` as a new user runs it: the portal link it prints opens, in a real
browser, on the demo tenant's endpoint and its delivered demo webhooks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.portal.browser.conftest import shoot
from tests.processes import free_port

LINK = re.compile(r"portal for site B .*: (http://127\.0\.0\.1:\d+/portal/open\?token=\S+)")


def _printed_link(process: subprocess.Popen[str], timeout_s: float = 90) -> str:
    deadline = time.monotonic() + timeout_s
    seen = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        found = LINK.search(line)
        if found:
            return found.group(1)
    raise AssertionError("no portal link printed:\n" + "".join(seen))


def test_the_demos_portal_link_shows_its_deliveries(page: Any, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "hookline", "dev", "--demo", "--port", str(port),
         "--demo-events", "3"],
        cwd=tmp_path, env={**env, "COLUMNS": "200"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        page.goto(_printed_link(process))
        page.wait_for_url(re.compile(r"/portal/endpoints$"))
        assert "/site-b/webhooks" in page.content()
        page.get_by_role("link", name="Delivery log").click()
        assert page.locator("tbody tr").count() == 3
        assert page.content().count("content.updated") == 3
        shoot(page, "00-demo-delivery-log")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
