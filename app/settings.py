"""Backend settings: environment variables `SPLITWATCH_*`, or keywords in tests.

Nothing builds a Settings at import time: `create_app(settings)` receives one, the CLI builds
one from its flags and the environment, and tests pass keywords
(`Settings(database_url=..., silent_after_s=5)`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPLITWATCH_", extra="ignore", frozen=True)

    # SQLite by default (one file, one writer thread); `postgresql://...` in production.
    database_url: str = "sqlite:///./splitwatch.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    # HTTPS served by uvicorn itself (issue 17): a PEM certificate (chain) and its key. Unset:
    # plain HTTP, for 127.0.0.1 or behind a TLS-terminating reverse proxy.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # The proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (uvicorn's
    # forwarded_allow_ips): comma-separated addresses or networks, "*" for any.
    forwarded_allow_ips: str = "127.0.0.1"
    # Applies to the body as received AND after gzip decompression: a gzip bomb gets 413.
    max_body_bytes: int = Field(default=8 * MiB, ge=1024)
    # A host that has sent nothing for this long is "silent".
    silent_after_s: int = Field(default=300, ge=1)
    # Seconds between alert rule evaluations.
    alert_interval: float = Field(default=30.0, gt=0)
    # Webhook URLs on loopback/private addresses are refused unless this is set.
    webhook_allow_private: bool = False
    # A webhook receiver gets this long to accept the connection, and again to answer.
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Failed deliveries are retried with exponential backoff and jitter, the wait capped here,
    # until webhook_max_attempts; a 429's Retry-After is honoured up to webhook_retry_after_max_s.
    webhook_backoff_cap_s: float = Field(default=300.0, gt=0)
    webhook_max_attempts: int = Field(default=12, ge=1, le=1000)
    webhook_retry_after_max_s: float = Field(default=3600.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Base URL the dashboard is reached at, for links in alerts; None = derived from host/port.
    public_url: str | None = None
    # Guest names one host may bring (#14: one agent token created 40,000): in total, past
    # which its events are stored without their guest and counted as a `guest_cap` gap, and
    # new ones per batch, past which the batch gets 413 and the agent sends it in parts.
    max_guests_per_host: int = Field(default=1000, ge=1)
    max_new_guests_per_batch: int = Field(default=256, ge=1)
    # token.last_used_at is written at most this often per token: no write per read request.
    token_touch_interval_s: int = Field(default=60, ge=1)
    # A live token's lookup is remembered this long per process (never past its expires_at):
    # agents send every 10 s, so a shorter TTL made nearly every ingest request a query (#13).
    # Revocation does not wait for it (token_revocation_poll_s); it bounds how long a process
    # that cannot reach the database keeps trusting what it remembered. 0 looks every request up.
    token_cache_ttl_s: float = Field(default=300.0, ge=0, le=3600)
    # An unknown token's answer is remembered this long (issue 14: a flood with a bogus token
    # costs one query per TTL), short so a token made by another process works soon after.
    # Never longer than token_cache_ttl_s.
    token_negative_ttl_s: float = Field(default=10.0, ge=0, le=300)
    # Every process asks the database this often which of the tokens it remembers were revoked
    # (or expired) meanwhile, and forgets them: a token revoked anywhere stops working everywhere
    # within about this many seconds. 0: no polling (then token_cache_ttl_s bounds it).
    token_revocation_poll_s: float = Field(default=5.0, ge=0, le=300)
    # Ingest requests one process works on at once (reading, validating, waiting for the write).
    # One more waits, unread, for a place (first come, first served) up to ingest_max_wait_s,
    # then is answered 503 and the agent backs off with jitter. After an outage every agent
    # replays its spool at the same moment: unbounded, the queued batches outgrow memory and
    # the agents' 10 s timeout, and every resend is work done twice (#13). Each one in progress
    # holds its body and parsed events (a full agent batch: ~1 MB and a few MB parsed). 0: no
    # limit.
    ingest_max_in_flight: int = Field(default=64, ge=0)
    # Well under the agent's 10 s timeout, so that a batch let in after waiting is still stored
    # before its agent gives up on it. 0: refused at once.
    ingest_max_wait_s: float = Field(default=5.0, ge=0, le=60)
    # Threads that run the read routes' blocking work (queries, CSV rows) per process (issue 14).
    # More requests than this wait as coroutines, taking no thread and no connection, and the
    # event loop (authentication, ingest validation) is not crowded out of the GIL by dozens of
    # reader threads. Ingest writes and token lookups have threads of their own.
    threadpool_size: int = Field(default=8, ge=1, le=1000)
    # Read connections per process. None: 12 + 12 overflow on SQLite, 12 + 8 on PostgreSQL (each
    # is a server process): one per threadpool thread and token-lookup thread, so a reader never
    # waits for one. Ingest on PostgreSQL has its own connections, so readers never starve it.
    db_pool_size: int | None = Field(default=None, ge=1, le=1000)
    db_max_overflow: int | None = Field(default=None, ge=0, le=1000)
    # A request that waits this long for a pooled connection answers 503 with Retry-After.
    db_pool_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # /metrics wants `Authorization: Bearer <this>` when set; unset, it is open (as for a
    # Prometheus on a private network).
    metrics_token: str | None = Field(default=None, min_length=16, max_length=200)
    # Seconds an idle keep-alive connection stays open between requests.
    keep_alive_timeout_s: float = Field(default=5.0, gt=0, le=600)
    # Seconds a client has to send a whole request head (line and headers) once it connects or
    # starts a request: a silent or partial-header connection is closed after it (app/server.py).
    head_timeout_s: float = Field(default=10.0, gt=0, le=600)

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # docker compose's `${SPLITWATCH_METRICS_TOKEN:-}` passes "" when .env has none.
        return None if value == "" else value

    # Raw events (and the minute rollups) are kept this many days; the hourly rollups and the
    # gaps this many: charts past the raw horizon read rollup_1h (app/retention/plan.py, #13).
    retention_days: int = Field(default=30, ge=1)
    rollup_retention_days: int = Field(default=400, ge=1)

    @model_validator(mode="after")
    def _rollups_outlive_events(self) -> Settings:
        if self.rollup_retention_days < self.retention_days:
            raise ValueError(
                f"rollup_retention_days ({self.rollup_retention_days}) is shorter than retention_days "
                f"({self.retention_days}): charts would lose days whose raw events are still kept; "
                "set SPLITWATCH_ROLLUP_RETENTION_DAYS >= SPLITWATCH_RETENTION_DAYS"
            )
        return self

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.ssl_certfile else "http"
        return f"{scheme}://{self.host}:{self.port}"
