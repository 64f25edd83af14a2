"""AgentConfig: every knob of the running agent (`splitwatch agent`), checked once at construction.

The CLI (app/cli/agent.py) builds it from flags; tests build it with keywords, using short
intervals and small backoff caps so an outage test takes seconds, not minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agent.errors import ConfigError

DEFAULT_STATE_DIR = Path("/var/lib/splitwatch")
DEFAULT_SPOOL_DIR = DEFAULT_STATE_DIR / "spool"


@dataclass(frozen=True)
class AgentConfig:
    server: str
    token: str
    root: Path = Path("/")
    interval_s: float = 10.0
    spool_dir: Path = DEFAULT_SPOOL_DIR
    state_dir: Path = DEFAULT_STATE_DIR
    batch_max_events: int = 1000
    # 0: send what is pending every pass; larger values let records wait (up to this age)
    # until batch_max_events accumulate, trading latency for fewer requests.
    batch_max_age_s: float = 0.0
    spool_max_bytes: int = 256 * 1024 * 1024
    timeout_s: float = 10.0
    use_tracefs: bool = True
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    # SIGTERM: one last flush attempt, bounded so systemd's stop timeout is never reached.
    shutdown_flush_s: float = 3.0
    # None: run until SIGTERM/SIGINT. A number: stop after that many passes (bench, tests).
    max_passes: int | None = None
    # PEM bundle of the private CA that signed an https server's certificate (--ca-file);
    # None: the system's trust store. Verification is never off.
    ca_file: Path | None = None
    # Where `token` came from when the host enrolled (#15: STATE_DIR/agent-token), so a refused
    # token is explained as a revoked or re-keyed enrollment.
    token_file: Path | None = None

    def __post_init__(self) -> None:
        url = urlsplit(self.server)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ConfigError(
                f"server {self.server!r} is not an http(s) URL: pass --server https://splitwatch.example:8000"
            )
        if not self.token.strip():
            raise ConfigError(
                "agent token is empty: create one with `splitwatch token create --role agent --host NAME` "
                "and pass it with --token"
            )
        positive = {
            "interval_s": self.interval_s,
            "batch_max_events": self.batch_max_events,
            "spool_max_bytes": self.spool_max_bytes,
            "timeout_s": self.timeout_s,
            "backoff_base_s": self.backoff_base_s,
            "backoff_cap_s": self.backoff_cap_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be greater than 0, got {value!r}: pass a positive value")
        for name, value in (
            ("batch_max_age_s", self.batch_max_age_s),
            ("shutdown_flush_s", self.shutdown_flush_s),
        ):
            if value < 0:
                raise ConfigError(f"{name} must not be negative, got {value!r}: pass 0 or more")
        if self.backoff_cap_s < self.backoff_base_s:
            raise ConfigError(
                f"backoff_cap_s ({self.backoff_cap_s}) is below backoff_base_s ({self.backoff_base_s}): "
                "raise the cap"
            )
        if self.max_passes is not None and self.max_passes < 1:
            raise ConfigError(
                f"max_passes must be at least 1, got {self.max_passes}: pass 1 or more, or None"
            )

    @property
    def ingest_url(self) -> str:
        return self.server.rstrip("/") + "/api/v1/ingest"
