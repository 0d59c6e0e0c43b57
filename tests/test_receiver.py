"""The test receiver: a real HTTP/1.1 server on 127.0.0.1, scripted per request."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from hookline.receiver import Receiver, Reply


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def test_requests_are_recorded_with_lower_cased_headers_and_exact_bodies() -> None:
    with Receiver() as receiver:
        assert receiver.url == f"http://127.0.0.1:{receiver.port}"
        response = http().post(
            f"{receiver.url}/hooks?x=1", data=b"\x00body\xff", headers={"Webhook-Id": "evt_1"}
        )
        assert response.status_code == 200
        assert receiver.wait_for(1, 5)
    [request] = receiver.received
    assert (request.method, request.path, request.body) == ("POST", "/hooks?x=1", b"\x00body\xff")
    assert request.headers["webhook-id"] == "evt_1"
    assert request.headers["content-length"] == "6"
    assert request.received_at <= time.time()


def test_one_keep_alive_connection_carries_many_requests() -> None:
    session = http()
    with Receiver() as receiver:
        for n in range(20):
            assert session.post(receiver.url, data=str(n)).status_code == 200
        assert receiver.count == 20
        assert receiver.connections == 1


def test_respond_scripts_status_headers_and_body() -> None:
    def respond(request):
        if request.path == "/limited":
            return Reply(429, b"slow down", {"retry-after": "7"})
        return Reply(302, headers={"location": "/elsewhere"})

    with Receiver(respond=respond) as receiver:
        limited = http().post(f"{receiver.url}/limited", data=b"{}")
        moved = http().post(f"{receiver.url}/moved", data=b"{}", allow_redirects=False)
    assert (limited.status_code, limited.text, limited.headers["retry-after"]) == (
        429, "slow down", "7"
    )  # fmt: skip
    assert (moved.status_code, moved.headers["location"]) == (302, "/elsewhere")


def test_a_delayed_answer_does_not_hold_up_other_connections() -> None:
    outcome: list[str] = []

    def slow_request(url: str) -> None:
        try:
            http().post(url, data=b"", timeout=2)
            outcome.append("answered")
        except requests.Timeout:
            outcome.append("timed out")

    with Receiver(respond=lambda r: Reply(200, delay_s=30 if r.path == "/slow" else 0)) as rc:
        slow = threading.Thread(target=slow_request, args=(f"{rc.url}/slow",), daemon=True)
        slow.start()
        assert rc.wait_for(1, 5)
        assert http().post(f"{rc.url}/fast", data=b"", timeout=5).status_code == 200
        assert slow.is_alive(), "the slow request was answered before its delay"
        slow.join(10)
    assert outcome == ["timed out"]


def test_pipelined_requests_are_answered_in_order() -> None:
    def respond(request):
        return Reply(200, request.path.encode(), delay_s=0.3 if request.path == "/1" else 0)

    with (
        Receiver(respond=respond) as receiver,
        socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock,
    ):
        sock.sendall(
            b"POST /1 HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
            b"POST /2 HTTP/1.1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.index(b"\r\n\r\n/1") < answer.index(b"\r\n\r\n/2")
    assert answer.count(b"HTTP/1.1 200 OK") == 2


def test_a_chunked_upload_is_refused_with_411() -> None:
    with (
        Receiver() as receiver,
        socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock,
    ):
        sock.sendall(
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 411 Length Required")


def test_a_failing_callback_answers_500() -> None:
    def respond(request):
        raise ValueError("scripted failure")

    with Receiver(respond=respond) as receiver:
        response = http().post(receiver.url, data=b"")
    assert response.status_code == 500
    assert "scripted failure" in response.text


def test_without_keep_only_the_count_and_on_receive_see_requests() -> None:
    seen: list[str] = []
    receiver = Receiver(keep=False)
    receiver.on_receive = lambda r: seen.append(r.path)
    with receiver:
        http().post(f"{receiver.url}/a", data=b"")
        http().post(f"{receiver.url}/b", data=b"")
        assert receiver.wait_for(2, 5)
        assert not receiver.wait_for(3, 0.05)
    assert receiver.received == []
    assert seen == ["/a", "/b"]


def test_the_standalone_receiver_logs_arrivals_and_exits_on_sigterm(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "arrivals.tsv"
    command = [sys.executable, "-m", "hookline.receiver", "--port", str(port), "--status", "202",
               "--log", str(log), "--every-s", "0.2"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert proc.stdout is not None
        assert "listening" in proc.stdout.readline()
        session = http()
        for n in range(3):
            response = session.post(f"http://127.0.0.1:{port}/", headers={"webhook-id": f"e{n}"})
            assert response.status_code == 202
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "received 3 in total" in output
    lines = [line.split("\t") for line in log.read_text().splitlines()]
    assert [wid for wid, _ in lines] == ["e0", "e1", "e2"]
    assert all(float(at) > 0 for _, at in lines)


def test_a_reset_reply_aborts_the_connection_without_an_answer() -> None:
    with Receiver(respond=lambda r: Reply(reset=r.path == "/reset")) as receiver:
        try:
            http().post(f"{receiver.url}/reset", data=b"{}", timeout=5)
        except requests.ConnectionError as exc:
            error: Exception | None = exc
        else:
            error = None
        assert error is not None, "the client got an answer"
        assert http().post(f"{receiver.url}/ok", data=b"{}", timeout=5).status_code == 200
    assert [r.path for r in receiver.received] == ["/reset", "/ok"]
