"""The portal in a real browser, against a real API, router, dispatcher and receiver: open
a link, add an endpoint that passes the handshake, send a test event and find it in the
log with the headers it was sent with, let the endpoint fail and recover its deliveries,
rotate its secret, choose whether it gets the trace context, page through the log, sign
out.

The tests run in order and share one stack (and one endpoint). With
HOOKLINE_PORTAL_SCREENSHOTS=1 each page is saved under docs/portal/.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from common.signing import verify
from tests.portal.browser.conftest import Stack, shoot

STATE: dict[str, str] = {}
WAIT_S = 30.0


def _open(page: Any, stack: Stack, **body: Any) -> None:
    page.goto(stack.link(scope="manage", **body))
    page.wait_for_url(re.compile(r"/portal/endpoints$"))
    assert "token=" not in page.url


def _until(page: Any, url: str, text: str, timeout_s: float = WAIT_S) -> None:
    """Reload `url` until the page shows `text`."""
    deadline = time.monotonic() + timeout_s
    while True:
        page.goto(url)
        if text in page.content():
            return
        assert time.monotonic() < deadline, f"{text!r} did not appear on {url}"
        time.sleep(0.5)


def test_a_link_opens_the_portal_and_an_endpoint_passes_the_handshake(
    page: Any, stack: Stack
) -> None:
    _open(page, stack)
    assert page.locator("h1").inner_text() == "Endpoints"
    shoot(page, "01-endpoints-empty")
    page.get_by_role("link", name="Add endpoint").first.click()
    page.get_by_label("Endpoint URL").fill(f"{stack.receiver.url}/acme/webhooks")
    page.get_by_label("Event types").fill("order.*")
    page.get_by_label("Description").fill("Order sync")
    shoot(page, "02-add-endpoint")
    page.get_by_role("button", name="Add endpoint and verify").click()
    result = page.locator("#handshake-result")
    assert "Verified." in result.inner_text()
    STATE["secret"] = page.locator("#secret-value").inner_text().strip()
    assert STATE["secret"].startswith("whsec_")
    shoot(page, "03-endpoint-verified")
    page.get_by_role("link", name="Go to the endpoint").click()
    STATE["endpoint"] = page.url


def test_a_test_event_shows_up_in_the_delivery_log(page: Any, stack: Stack) -> None:
    _open(page, stack)
    page.goto(STATE["endpoint"])
    page.get_by_role("button", name="Send test event").click()
    assert "Test event sent" in page.locator("#notice").inner_text()
    _until(page, f"{stack.url}/portal/deliveries?event_type=hookline.test", "succeeded")
    shoot(page, "04-delivery-log")
    page.get_by_role("link", name=re.compile("View")).first.click()
    page.locator("li.attempt").first.wait_for()  # the delivery's page has loaded
    assert "Attempt 1" in page.content() and "HTTP 200" in page.content()
    page.get_by_text("Request headers sent").click()
    shoot(page, "05-delivery-attempts")
    received = stack.site.received[-1]
    verify(STATE["secret"], received.headers, received.body)
    shown = _headers_shown(page)
    for name in ("webhook-id", "webhook-timestamp", "content-type", "user-agent"):
        assert shown[name] == received.headers[name], name  # what the receiver got
    assert shown["webhook-signature"] == "v1,••••••"
    assert received.headers["webhook-signature"].split(",")[1] not in page.content()


def _headers_shown(page: Any) -> dict[str, str]:
    rows = page.locator("details.sent tr")
    return {
        rows.nth(n).locator("th").inner_text(): rows.nth(n).locator("td").inner_text()
        for n in range(rows.count())
    }


def test_a_failing_endpoint_is_recovered_from_the_portal(page: Any, stack: Stack) -> None:
    _open(page, stack)
    stack.site.failing = True
    since = datetime.now(UTC) - timedelta(minutes=1)
    for number in range(3):
        stack.publish("order.created", {"order": 1000 + number})
    _until(page, f"{stack.url}/portal/deliveries?status=dead", "order.created")
    deadline = time.monotonic() + WAIT_S
    while page.locator("tbody tr").count() < 3:
        assert time.monotonic() < deadline, "the three deliveries did not fail"
        time.sleep(0.5)
        page.reload()
    shoot(page, "06-failed-deliveries")
    page.locator("tbody tr").first.get_by_role("link").click()
    page.locator("li.attempt").first.wait_for()
    assert "HTTP 503" in page.content() and "down for maintenance" in page.content()
    shoot(page, "07-failed-attempts")
    page.goto(STATE["endpoint"])
    # The breaker of the one dispatcher has seen nine failures in a row (threshold 5):
    # open, or half-open once its second has passed; never inferred from the streak.
    circuit = page.locator("#circuit").inner_text()
    assert re.search(r"(open|half-open) on 1 of 1 dispatcher", circuit, re.I), circuit
    shoot(page, "08-endpoint-health")
    stack.site.failing = False
    page.get_by_label("Re-send everything that failed since (UTC)").fill(
        since.strftime("%Y-%m-%dT%H:%M")
    )
    page.get_by_role("button", name="Recover").click()
    page.wait_for_url(re.compile(r"/portal/jobs/rpl_"))
    page.locator("#job-state").filter(has_text="completed").wait_for(timeout=WAIT_S * 1000)
    assert page.locator("#job-done").inner_text() == "3"
    shoot(page, "09-recovery-job")
    _until(page, f"{stack.url}/portal/deliveries?event_type=order.created&status=succeeded",
           "order.created")  # fmt: skip
    deadline = time.monotonic() + WAIT_S
    while page.locator("tbody tr").count() < 3:
        assert time.monotonic() < deadline, "the recovered deliveries did not succeed"
        time.sleep(0.5)
        page.reload()
    page.goto(STATE["endpoint"])
    _until(page, STATE["endpoint"], "closed</span> on the one dispatcher")


def test_rotating_the_secret_signs_with_both_during_the_overlap(page: Any, stack: Stack) -> None:
    _open(page, stack)
    page.goto(STATE["endpoint"])
    page.get_by_label("Keep the old secret signing too for (hours)").fill("2")
    page.get_by_role("button", name="Rotate secret").click()
    page.locator("h1", has_text="New signing secret").wait_for()
    new_secret = page.locator("#secret-value").inner_text().strip()
    assert new_secret.startswith("whsec_") and new_secret != STATE["secret"]
    shoot(page, "10-rotated-secret")
    page.get_by_role("link", name="Back to the endpoint").click()
    before = len(stack.site.received)
    time.sleep(1.5)  # the dispatcher's subscription cache picks the new secret up
    page.get_by_role("button", name="Send test event").click()
    deadline = time.monotonic() + WAIT_S
    while len(stack.site.received) <= before:
        assert time.monotonic() < deadline, "the test event did not arrive"
        time.sleep(0.2)
    received = stack.site.received[-1]
    verify(new_secret, received.headers, received.body)
    verify(STATE["secret"], received.headers, received.body)


def test_the_trace_context_choice_is_saved_from_the_keyboard(page: Any, stack: Stack) -> None:
    _open(page, stack)
    page.goto(STATE["endpoint"])
    assert page.locator("#trace-context").inner_text() == "off"
    assert page.get_by_label("Do not send it").is_checked()
    page.get_by_label("Send it with each webhook").focus()
    page.keyboard.press("Space")  # a radio button, reachable and chosen by keyboard
    assert page.get_by_label("Send it with each webhook").is_checked()
    page.get_by_role("button", name="Save changes").click()
    assert "Saved." in page.locator("#notice").inner_text()
    assert page.locator("#trace-context").inner_text().startswith("on: each webhook carries")
    page.get_by_label("Do not send it").check()
    page.get_by_role("button", name="Save changes").click()
    assert page.locator("#trace-context").inner_text() == "off"


def test_a_read_only_link_shows_no_actions_and_a_used_link_is_refused(
    page: Any, stack: Stack
) -> None:
    link = stack.link(scope="read")
    page.goto(link)
    page.wait_for_url(re.compile(r"/portal/endpoints$"))
    assert page.get_by_text("Read only").is_visible()
    shoot(page, "11-endpoints-read-only")
    page.goto(STATE["endpoint"])
    assert page.get_by_role("button", name="Rotate secret").count() == 0
    page.keyboard.press("Tab")  # the skip link comes first in the focus order
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.get_by_role("link", name="Event types").click()
    page.locator("h1", has_text="Event types").wait_for()
    assert "A customer placed an order" in page.content() and "1042" in page.content()
    shoot(page, "13-event-types")
    page.goto(link)
    assert "has been used already" in page.content()
    shoot(page, "12-link-used")


def test_the_log_pages_through_older_and_newer_with_its_filters(page: Any, stack: Stack) -> None:
    for number in range(55):
        stack.publish("order.paged", {"order": 2000 + number})
    _open(page, stack)
    url = f"{stack.url}/portal/deliveries?event_type=order.paged&status=succeeded"
    deadline = time.monotonic() + WAIT_S
    while True:
        page.goto(url)
        if (
            page.locator("tbody tr").count() == 50
            and page.get_by_role("link", name="Older →").count()
        ):
            break
        assert time.monotonic() < deadline, "55 deliveries did not succeed"
        time.sleep(0.5)
    first = _rows(page)
    shoot(page, "14-delivery-log-pages")
    page.get_by_role("link", name="Older →").click()
    page.wait_for_url(re.compile(r"older="))
    assert page.locator("tbody tr").count() == 5
    assert page.get_by_label("Event type").input_value() == "order.paged"  # the filter stays
    assert page.get_by_label("Status").input_value() == "succeeded"
    assert page.get_by_role("link", name="Older →").count() == 0
    page.get_by_role("link", name="← Newer").click()
    page.wait_for_url(re.compile(r"newer="))
    assert page.locator("tbody tr").count() == 50
    assert _rows(page) == first


def _rows(page: Any) -> list[str]:
    links: list[str] = page.locator("tbody tr a").evaluate_all(
        "links => links.map(link => link.getAttribute('href'))"
    )
    return links


def test_signing_out_ends_the_session(page: Any, stack: Stack) -> None:
    _open(page, stack)
    page.goto(STATE["endpoint"])
    [cookie] = [c for c in page.context.cookies() if c["name"] == "hookline_portal"]
    page.get_by_role("button", name="Sign out").click()
    page.locator("h1", has_text="Signed out").wait_for()
    shoot(page, "15-signed-out")
    assert [c for c in page.context.cookies() if c["name"] == "hookline_portal"] == []
    # A copy of the cookie kept from before (another tab, a stolen copy) opens nothing:
    # the session ended on the server, not only in this browser.
    page.context.add_cookies([cookie])
    answer = page.goto(STATE["endpoint"])
    assert answer is not None and answer.status == 401
    assert "You signed out of this portal session" in page.content()
