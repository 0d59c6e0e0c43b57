"""One `Settings` object, read from `HOOKLINE_*` variables, built in `main()` and passed down."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.db.keeper import Policy
from common.egress import Proxy, check_ca_file, parse_proxy
from common.errors import ConfigurationError
from common.tiers import tiers
from common.transport.topology import DEFAULT_SHARDS, DEFAULT_SHARE_PER_S

DEFAULT_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,10h"
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in `text` such as `5s`, `30m`, `2h`, `1.5d` or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigurationError(f"not a duration: {text!r} (use e.g. 5s, 30m, 2h)")
    value, unit = match.groups()
    return float(value) * _UNIT_S[unit or "s"]


def parse_schedule(text: str) -> tuple[float, ...]:
    """The delays before each retry, from a comma-separated list such as `5s,5m,30m`."""
    parts = [p for p in text.split(",") if p.strip()]
    delays = tuple(parse_duration(p) for p in parts)
    if any(d <= 0 for d in delays):
        raise ConfigurationError("retry delays must be positive")
    return delays


class Settings(BaseSettings):
    # A refused value is never echoed: settings hold passwords (URLs, tokens, the proxy's).
    model_config = SettingsConfigDict(
        env_prefix="HOOKLINE_", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = "sqlite:///hookline.db"
    # One amqp:// URL, or the URLs of a cluster's nodes separated by commas (fail-over).
    broker_url: str = "amqp://guest:guest@localhost:5672/%2F"
    # Replicas per quorum queue at creation; 0: one per node in broker_url, at most 5 (a
    # single URL leaves it to RabbitMQ). Set it when one URL is a load balancer.
    quorum_group_size: int = Field(default=0, ge=0, le=9)
    # `memory://` outside `hookline dev`: only tests turn this on (a command's in-memory
    # broker ends with its process, and whatever it was given with it).
    allow_memory_broker: bool = False
    admin_token: str | None = None
    secret_key: str | None = None
    retry_schedule: str = DEFAULT_RETRY_SCHEDULE
    dispatcher_concurrency: int = Field(default=32, ge=1, le=1024)
    # Delivery messages a dispatcher holds unsettled; 0: eight per sending thread, at most
    # 1,000. Enough that the threads stay busy while a batch is being settled.
    dispatcher_prefetch: int = Field(default=0, ge=0, le=10_000)
    # Delivery queues tenants are hashed over (architecture §3); every process must agree.
    # Raise it freely; lowering strands the messages of the shards dropped (operations.md).
    delivery_shards: int = Field(default=DEFAULT_SHARDS, ge=1, le=256)
    # Deliveries per second a tenant routes to its own shard (per router process) before
    # the rest spill to the overflow shard; 0: never. A tenant row may override it.
    delivery_share_per_s: int = Field(default=DEFAULT_SHARE_PER_S, ge=0)
    # Worker processes of `hookline router` and `hookline dispatcher` (0: one per core).
    processes: int = Field(default=0, ge=0, le=256)
    allow_private_targets: bool = False
    allow_http: bool = False
    metrics_port: int | None = None
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"
    # Outbound HTTP: a connect timeout and a total deadline per request.
    connect_timeout_s: float = Field(default=5.0, gt=0)
    request_timeout_s: float = Field(default=15.0, gt=0)
    max_response_bytes: int = Field(default=64 * 1024, ge=0)
    # An HTTP CONNECT proxy for every delivery and handshake:
    # `http(s)://[user:pass@]host:port` (common/egress.py). Secret: it may carry the proxy's
    # password. An https:// proxy's certificate is checked against the system's CAs, or
    # against the PEM bundle `egress_proxy_ca` names.
    egress_proxy: SecretStr | None = None
    egress_proxy_ca: str | None = None
    # How long the router and dispatcher trust their subscription caches.
    subscription_refresh_s: float = Field(default=1.0, gt=0)
    publish_timeout_s: float = Field(default=30.0, gt=0)
    # How long an API process trusts a key it looked up; revoking through the API is
    # immediate in that process, other API processes notice within this time.
    api_key_cache_s: float = Field(default=1.0, ge=0)
    # How long an API process trusts its copy of a tenant's schema-validation setting and
    # catalogue versions (issue 16); a change through this process applies at once.
    catalogue_refresh_s: float = Field(default=1.0, gt=0)
    # How long a POST's answer is kept for a repeat with the same `Idempotency-Key`; older
    # answers are deleted by the API as it stores new ones, and by `hookline gc`.
    idempotency_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    # The request line and headers the API reads before answering 431.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    # The fastest replay a tenant's key may ask for (copies per second); the admin token
    # may ask for more, or for unlimited.
    replay_max_rate_per_s: float = Field(default=500.0, ge=0.01)  # a replay's own floor
    # Per-tenant API limits (architecture §7, "Per-tenant API limits"): the defaults of
    # every tenant, which the admin API overrides per tenant (`/v1/tenants/{id}/limits`).
    tenant_ingest_rate_per_s: float = Field(default=1000.0, ge=0.01, le=1_000_000)
    # Requests a second of a tenant's API keys to every route but ingest (which counts events).
    tenant_requests_per_s: float = Field(default=100.0, ge=0.01, le=1_000_000)
    tenant_max_batch_events: int = Field(default=1000, ge=1, le=1000)
    tenant_max_handshakes: int = Field(default=4, ge=1, le=1000)
    tenant_replay_starts_per_min: int = Field(default=10, ge=1, le=10_000)
    # Subscriptions a tenant may have: each event of the tenant is written and sent once per
    # matching one, on the routers every tenant shares.
    tenant_max_subscriptions: int = Field(default=100, ge=1, le=100_000)
    # Requests of a tenant (its keys and its portal sessions) in progress at once in one API
    # process, of the process's request threads and database connections.
    tenant_max_concurrent_requests: int = Field(default=8, ge=1, le=1000)
    # Look-ups of credentials (API keys, portal sessions and links) that find nothing, a
    # second per client address in one API process; beyond them an unknown one gets 429.
    api_unknown_credentials_per_s: int = Field(default=20, ge=1, le=100_000)
    # Outbound calls (handshakes) an API process runs at once, all tenants together.
    api_max_handshakes: int = Field(default=32, ge=1, le=1000)
    # The API's address as browsers and clients reach it, e.g. https://hooks.example.com when
    # a proxy in front ends TLS: portal links are built on it, and the portal's cookie is
    # `Secure` when it is https. Unset: the address each request came in on.
    public_url: str | None = None
    # The longest one statement of an API request may run on PostgreSQL (0: no bound).
    api_statement_timeout_s: float = Field(default=30.0, ge=0, le=3600)
    # Delivery engine: retry jitter, per-endpoint isolation, auto-disable (architecture §6).
    retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    endpoint_max_in_flight: int = Field(default=16, ge=1)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_open_s: float = Field(default=30.0, gt=0)
    auto_disable_after: str = "5d"
    # Partitioned storage (issue 17, PostgreSQL): days of deliveries, attempts and events
    # kept; dead letters (and their events and attempts) are kept for `dead_retention`.
    retention: str = "30d"
    dead_retention: str = "90d"
    auto_disable_dead_deliveries: int = Field(default=100, ge=0)  # 0: never by count

    @field_validator("retry_schedule")
    @classmethod
    def _schedule_parses(cls, value: str) -> str:
        try:
            parse_schedule(value)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("auto_disable_after", "retention", "dead_retention")
    @classmethod
    def _duration_parses(cls, value: str) -> str:
        try:
            parse_duration(value)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_an_origin(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        try:
            parts.port  # noqa: B018 -- raises for a port that is not one
        except ValueError:
            parts = parts._replace(netloc="")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("HOOKLINE_PUBLIC_URL must be an http:// or https:// address")
        if parts.username is not None or parts.query or parts.fragment:
            raise ValueError("HOOKLINE_PUBLIC_URL takes no credentials, query or fragment")
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    @field_validator("egress_proxy")
    @classmethod
    def _proxy_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            parse_proxy(value.get_secret_value())  # its ValueError names no credential
            return value
        return None  # set but empty: no proxy

    @field_validator("egress_proxy_ca")
    @classmethod
    def _proxy_ca_reads(cls, value: str | None) -> str | None:
        return check_ca_file(value) if value is not None and value.strip() else None

    @model_validator(mode="after")
    def _proxy_ca_has_an_https_proxy(self) -> Settings:
        if self.egress_proxy_ca is None:
            return self
        if self.egress_proxy is None:
            raise ValueError("HOOKLINE_EGRESS_PROXY_CA is set but HOOKLINE_EGRESS_PROXY is not")
        # Refuses a CA for an http:// proxy, in words that name no credential.
        parse_proxy(self.egress_proxy.get_secret_value(), self.egress_proxy_ca)
        return self

    @property
    def proxy(self) -> Proxy | None:
        """The egress proxy, parsed; None to connect to targets directly."""
        if self.egress_proxy is None:
            return None
        return parse_proxy(self.egress_proxy.get_secret_value(), self.egress_proxy_ca)

    @property
    def partition_policy(self) -> Policy:
        retention = timedelta(seconds=parse_duration(self.retention))
        dead = timedelta(seconds=parse_duration(self.dead_retention))
        return Policy(max(retention, timedelta(days=1)), max(dead, retention))

    @property
    def auto_disable_after_s(self) -> float:
        return parse_duration(self.auto_disable_after)

    @property
    def retry_delays_s(self) -> tuple[float, ...]:
        return parse_schedule(self.retry_schedule)

    @property
    def retry_tiers_s(self) -> tuple[float, ...]:
        """Every retry tier's delay: the schedule's and their jittered variants."""
        return tiers(self.retry_delays_s, self.retry_jitter)

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays_s) + 1
