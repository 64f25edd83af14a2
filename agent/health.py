"""The agent's own figures, sent in each batch's optional `health` field (#4).

The backend shows them per host, so an SRE sees an agent that lags, drops or cannot read its
MSRs without logging in to the host. Figures describe the moment of sending (lag, spool size,
last ack) and the last collection pass (duration, source statuses, MSR errors).

    lag_s             age of the oldest record still waiting in the spool (0: nothing waits)
    spool_depth       records waiting;  spool_bytes: their segment files on disk
    drops             events dropped by the spool's size limit since the agent started (each
                      also sent as a spool_full gap); dropped_payloads: the payloads that held them
    corrupt_records   spool records skipped as corrupt since start
    rejected_batches  payloads the backend refused (422), kept in spool_dir/rejected/
    last_ack_at       when the backend last answered 2xx (ISO 8601 UTC), null before the first
    send_failures     consecutive failed send attempts; token_rejected: the last 401/403 or null
    msr_errors        CPUs whose MSRs could not be read in the last pass
    kmsg_status       ok|absent|denied|failed for /dev/kmsg in the last pass; statuses: every source
    pass_duration_s   seconds the last collection pass took (read, spool, commit)
    interval_s        the configured interval;  uptime_s: seconds since the agent started
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.payload import Payload, format_time
from agent.spool import Spool
from agent.transport import Sender


def msr_errors(payloads: Sequence[Payload]) -> int:
    """CPUs with an MSR read error in the pass's host state."""
    for payload in payloads:
        if payload.state is not None:
            return sum(1 for cpu in payload.state.cpus if cpu.error is not None)
    return 0


@dataclass
class Health:
    interval_s: float
    started_at: float = field(default_factory=time.monotonic)
    pass_duration_s: float | None = None
    msr_errors: int = 0
    statuses: dict[str, str] = field(default_factory=dict)
    spool: Spool | None = None
    sender: Sender | None = None

    def observe_pass(
        self, payloads: Sequence[Payload], statuses: Mapping[str, str], duration_s: float
    ) -> None:
        self.pass_duration_s = duration_s
        self.msr_errors = msr_errors(payloads)
        self.statuses = dict(statuses)

    def figures(self) -> dict[str, Any]:
        now_wall = time.time()
        out: dict[str, Any] = {
            "interval_s": self.interval_s,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "pass_duration_s": None if self.pass_duration_s is None else round(self.pass_duration_s, 4),
            "msr_errors": self.msr_errors,
            "kmsg_status": self.statuses.get("kmsg"),
            "statuses": dict(self.statuses),
        }
        if self.spool is not None:
            oldest = self.spool.oldest_at
            out.update(
                lag_s=0.0 if oldest is None else round(max(now_wall - oldest, 0.0), 3),
                spool_depth=self.spool.depth,
                spool_bytes=self.spool.size_bytes,
                drops=self.spool.dropped_events,
                dropped_payloads=self.spool.dropped_payloads,
                corrupt_records=self.spool.corrupt_records,
                rejected_batches=self.spool.rejected_batches,
            )
        if self.sender is not None:
            last = self.sender.last_ack_at
            out.update(
                last_ack_at=None if last is None else format_time(last),
                send_failures=self.sender.failures,
                token_rejected=self.sender.token_rejected,
            )
        return out
