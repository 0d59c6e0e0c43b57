"""The CLI's HTTP client for a remote deployment: `--api-url` / `HOOKLINE_API_URL` with
`--token` / `HOOKLINE_API_TOKEN` (the admin token or a tenant's API key).

Every answer other than success becomes a `RemoteError`, which the `hookline` command
prints as one line (`hookline: <code>: <message>`); the token never appears in it. A 429
(a tenant's limit: nothing of the request was done) is sent again after its `Retry-After`,
a few times, when that is short."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from common.errors import ConfigurationError, HooklineError

TIMEOUT_S = 30.0
# An error body is read for its message only; a proxy's HTML page is not shown whole.
MAX_MESSAGE_CHARS = 500
RETRIES_AFTER_429 = 3
MAX_RETRY_AFTER_S = 10.0


class RemoteError(HooklineError):
    """The API refused or failed a request: its `code` and `message`, as one line."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        # A refused input (the caller can fix it) is a usage error; the rest a failure.
        self.exit_code = 2 if 400 <= status < 500 and status != 404 else 1


class Remote:
    """The API at `url`, called with `token` as the bearer."""

    def __init__(self, url: str, token: str | None, *, timeout_s: float = TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError("HOOKLINE_API_URL must be http(s)://host[:port]")
        if not token:
            raise ConfigurationError(
                "HOOKLINE_API_URL is set but no token: set HOOKLINE_API_TOKEN (or --token) "
                "to the admin token or an API key"
            )
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = requests.Session()
        self._http.trust_env = False  # the operator's target, not a proxy from the environment
        self._http.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return _object(self.call("GET", path, params=params))

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return _object(self.call("POST", path, body=body))

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return _object(self.call("PATCH", path, body=body))

    def post_bytes(self, path: str, data: bytes) -> dict[str, Any]:
        """POST `data` as it is (`application/octet-stream`), not as JSON."""
        return _object(self.call("POST", path, data=data))

    def delete(self, path: str) -> dict[str, Any]:
        return _object(self.call("DELETE", path))

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        data: bytes | None = None,
    ) -> Any:
        wanted = {k: v for k, v in (params or {}).items() if v is not None}
        raw = {"Content-Type": "application/octet-stream"} if data is not None else None
        for retry in range(RETRIES_AFTER_429 + 1):
            try:
                response = self._http.request(
                    method, self.url + path, params=wanted, json=body, data=data, headers=raw,
                    timeout=self.timeout_s,
                )  # fmt: skip
            except requests.RequestException as exc:
                raise RemoteError(0, "unreachable", f"{self.url}: {type(exc).__name__}") from None
            wait_s = _retry_after(response)
            if wait_s is None or retry == RETRIES_AFTER_429:
                break
            time.sleep(wait_s)
        if response.status_code >= 400:
            raise _refusal(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def _retry_after(response: requests.Response) -> float | None:
    """How long to wait before sending a 429's request again; None for any other answer,
    or a wait too long for a command line to sit through (then the 429 is the answer)."""
    if response.status_code != 429:
        return None
    try:
        wait_s = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return wait_s if 0 <= wait_s <= MAX_RETRY_AFTER_S else None


def _object(answer: Any) -> dict[str, Any]:
    return answer if isinstance(answer, dict) else {}


def segment(value: str) -> str:
    """A path segment, quoted (an id from the command line is not trusted to be one)."""
    return quote(value, safe="")


def _refusal(response: requests.Response) -> RemoteError:
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = f"http_{response.status_code}", response.reason or "error"
    return RemoteError(response.status_code, code, message[:MAX_MESSAGE_CHARS])
