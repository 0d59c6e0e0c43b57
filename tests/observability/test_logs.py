"""Structured logs carry the ids bound for a message and never a secret."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator

import pytest

from common import logs
from common.signing import new_secret, signature_header


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield capsys
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_carry_the_ids_bound_for_the_message(
    captured: pytest.CaptureFixture[str],
) -> None:
    logs.configure("json")
    log = logging.getLogger("hookline.test")
    with logs.bound(event_id="evt_1", delivery_id="dlv_1", subscription_id="sub_1"):
        log.info("delivered", extra={"status_code": 200})
    log.info("outside")
    inside, outside = json_lines(captured.readouterr().err)
    assert inside["msg"] == "delivered"
    assert (inside["event_id"], inside["delivery_id"], inside["subscription_id"]) == (
        "evt_1", "dlv_1", "sub_1",
    )  # fmt: skip
    assert inside["status_code"] == 200 and inside["level"] == "info"
    assert "delivery_id" not in outside


def test_bound_ids_stay_in_their_own_thread(captured: pytest.CaptureFixture[str]) -> None:
    logs.configure("json")
    log = logging.getLogger("hookline.test")
    ready, done = threading.Event(), threading.Event()

    def other() -> None:
        ready.wait(5)
        log.info("other thread")
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with logs.bound(delivery_id="dlv_mine"):
        ready.set()
        done.wait(5)
        log.info("this thread")
    thread.join(5)
    records = {r["msg"]: r for r in json_lines(captured.readouterr().err)}
    assert records["this thread"]["delivery_id"] == "dlv_mine"
    assert "delivery_id" not in records["other thread"]


def test_binding_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="not a bindable log field"), logs.bound(url="x"):
        pass


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_secrets_and_signatures_never_reach_the_output(
    captured: pytest.CaptureFixture[str], log_format: str
) -> None:
    secret = new_secret()
    signature = signature_header([secret], "evt_1", 1700000000, b'{"a":1}')
    api_key = "hl_" + "k" * 30
    logs.configure(log_format)
    log = logging.getLogger("hookline.test")
    log.warning(
        "posting with %s and %s to amqp://guest:hunter2@broker:5672/", secret, signature,
        extra={"secret": secret, "webhook_signature": signature, "headers_seen": api_key,
               "authorization": "Bearer tok123", "error": f"Bearer tok123 {api_key}"},
    )  # fmt: skip
    try:
        raise RuntimeError(f"failed with {secret}")
    except RuntimeError:
        log.exception("crash")
    out = captured.readouterr().err
    for leaked in (secret, signature.split(",", 1)[1], api_key, "tok123", "hunter2"):
        assert leaked not in out, f"{leaked!r} leaked into {log_format} logs"
    assert out.count(logs.MASK) >= 6
    assert "posting with" in out and "crash" in out and "guest" in out


def test_a_console_line_shows_control_characters_as_escapes_and_stays_one_line(
    captured: pytest.CaptureFixture[str],
) -> None:
    # What is logged may quote a tenant or a receiver: a line break would forge a record
    # of its own, an escape sequence would run in the operator's terminal.
    logs.configure("console")
    log = logging.getLogger("hookline.test")
    forged = "refused\n12:00:00 INFO    hookline.api: all clear\x1b[2J\u202e"
    log.warning("compile failed: %s", forged, extra={"reason": "a\r\nb\x1b]52;c;x\x07"})
    try:
        raise ValueError("boom\x1b[31m")
    except ValueError:
        log.exception("crashed")
    err = captured.readouterr().err
    first, second, *trace = err.splitlines()
    assert "all clear" in first and first.endswith("[reason=a\\x0d\\x0ab\\x1b]52;c;x\\x07]")
    assert "\\x0a12:00:00 INFO" in first and "\\x1b[2J\\u202e" in first
    assert second.endswith("hookline.test: crashed")
    assert trace[0].startswith("Traceback") and "boom\\x1b[31m" in trace[-1]
    assert "\x1b" not in err and "\u202e" not in err and "\r" not in err
