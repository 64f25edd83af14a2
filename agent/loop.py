"""The running agent: collect -> spool -> commit -> send, once per interval (#4).

Order is the durability argument (docs/agent.md):
  1. collect one pass (agent/collect.py; never raises on host trouble);
  2. append its payloads to the spool: written and fsynced before append returns;
  3. only then commit the collector (the kmsg cursor moves): a crash before 3 re-reads the
     same records next time, and the backend dedups them on (host, boot_id, source, seq);
  4. send what waits in the spool (agent/transport.py); records leave it only on 2xx;
  5. sleep until the next interval on an Event, the one place the agent sleeps, so SIGTERM
     and SIGINT wake it at once.
On SIGTERM/SIGINT: no new pass, one last send attempt bounded by shutdown_flush_s, exit 0 with
whatever was not sent still in the spool for the next start.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any, Protocol

import agent
from agent.config import AgentConfig
from agent.errors import ConfigError, SplitwatchAgentError, SpoolError
from agent.health import Health
from agent.payload import Payload
from agent.spool import Spool
from agent.state_refresh import StateRefresh
from agent.stop_signals import stop_on_signals
from agent.transport import Sender, Transport

log = logging.getLogger("splitwatch.agent.loop")


class _Collected(Protocol):
    @property
    def payloads(self) -> list[Payload]: ...
    @property
    def statuses(self) -> dict[str, str]: ...
    def commit(self) -> None: ...


class _Collector(Protocol):
    def collect(self) -> Any: ...
    def close(self) -> None: ...


def _ensure_stderr_logging() -> None:
    """Human sentences on stderr (journald adds the time), unless the caller set logging up."""
    root = logging.getLogger()
    ours = logging.getLogger("splitwatch")
    if root.handlers or ours.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("splitwatch agent: %(levelname)s: %(message)s"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)


def run(config: AgentConfig, *, stop: threading.Event | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT (or `stop` is set, or max_passes); returns the exit code:
    0 after a clean stop, 1 when it cannot start (the reason is logged as one sentence) or when
    a run of max_passes (`--once`) ended with the token refused."""
    _ensure_stderr_logging()
    stopped = stop or threading.Event()

    def stopping(signum: signal.Signals) -> None:
        if not stopped.is_set():  # said once, however many signals follow
            log.info("%s received: finishing this pass, one last send, then exiting", signum.name)

    with stop_on_signals(stopped, on_signal=stopping):
        return Agent(config).run(stopped)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.health = Health(interval_s=config.interval_s)
        self.state_refresh = StateRefresh(config.state_refresh_s)
        self.passes = 0
        self._explained: str | None = None

    def _open_collector(self) -> _Collector:
        from agent.collect import Collector

        return Collector(self.config.root, self.config.state_dir, use_tracefs=self.config.use_tracefs)

    def run(self, stop: threading.Event) -> int:
        config = self.config
        try:
            spool = Spool(config.spool_dir, max_bytes=config.spool_max_bytes)
        except SpoolError as exc:
            log.error("cannot start: %s", exc)
            return 1
        try:
            collector = self._open_collector()
        except (SplitwatchAgentError, OSError) as exc:
            spool.close()
            log.error("cannot start: cannot read the host at %s: %s", config.root, exc)
            return 1
        try:
            transport = Transport(
                config.server,
                config.token,
                timeout_s=config.timeout_s,
                agent_version=agent.__version__,
                ca_file=config.ca_file,
            )
        except ConfigError as exc:
            collector.close()
            spool.close()
            log.error("cannot start: %s", exc)
            return 1
        sender = Sender(
            spool,
            transport,
            batch_max_events=config.batch_max_events,
            batch_max_age_s=config.batch_max_age_s,
            backoff_base_s=config.backoff_base_s,
            backoff_cap_s=config.backoff_cap_s,
            health=self.health.figures,
        )
        self.health.spool, self.health.sender = spool, sender
        log.info(
            "started: reading the host at %s every %g s, sending to %s; spool %s holds %d record(s)",
            config.root,
            config.interval_s,
            transport.url,
            config.spool_dir,
            spool.depth,
        )
        try:
            while not stop.is_set():
                started = time.monotonic()
                self._pass(collector, spool, sender, stop)
                self.passes += 1
                if config.max_passes is not None and self.passes >= config.max_passes:
                    break
                stop.wait(max(0.0, config.interval_s - (time.monotonic() - started)))
        finally:
            collector.close()
            self._last_flush(sender, spool)
            transport.close()
            spool.close()
        if config.max_passes is not None and sender.token_rejected is not None:
            # `--once` in a script or a deploy check: a refused token is a failed run (issue 17),
            # said once by the sender; the records stay in the spool for a valid token.
            return 1
        return 0

    def _pass(self, collector: _Collector, spool: Spool, sender: Sender, stop: threading.Event) -> None:
        started = time.monotonic()
        collected: _Collected = collector.collect()
        payloads = list(collected.payloads)
        try:
            # The state only when it says something new (agent/state_refresh.py, #13).
            spool.append([p.to_json().encode() for p in self.state_refresh.filter(payloads)])
        except SpoolError as exc:
            # Not committed: the kmsg cursor stays, the next pass reads these records again.
            log.error("this pass was not saved: %s", exc)
        else:
            try:
                collected.commit()
            except OSError as exc:
                log.warning(
                    "could not save the read position in %s (%s): the next pass re-reads records "
                    "already spooled, which the backend ignores as duplicates; fix the directory",
                    self.config.state_dir,
                    exc.strerror or exc,
                )
        self.health.observe_pass(payloads, getattr(collected, "statuses", {}), time.monotonic() - started)
        try:
            # A backlog (after an outage) drains over several passes: collection stays on time,
            # so the kernel's ring buffer is read before it wraps. SIGTERM interrupts it.
            sender.send_pending(deadline=time.monotonic() + max(self.config.interval_s, 1.0), stop=stop)
        except SpoolError as exc:
            log.error("sending stopped for this pass: %s", exc)
        self._explain_enrolled_token(sender)

    def _explain_enrolled_token(self, sender: Sender) -> None:
        """#15: an enrolled host's token refused = an admin revoked or re-keyed it; say what to do,
        once per refusal (the sender keeps everything and asks once per pass)."""
        rejected = sender.token_rejected
        if rejected and self.config.token_file is not None and rejected != self._explained:
            log.error(
                "this host's enrolled agent token (%s) was refused: an admin revoked or re-keyed it. "
                "Sending has stopped; the spool keeps everything. To enroll again, delete %s and restart "
                "the agent with a valid enrollment token; or put the re-keyed token in that file and "
                "restart",
                self.config.token_file,
                self.config.token_file,
            )
        self._explained = rejected

    def _last_flush(self, sender: Sender, spool: Spool) -> None:
        if spool.depth == 0:
            log.info("stopped: every record was sent")
            return
        if sender.token_rejected is not None:
            # The last pass was refused the token: asking again a moment later only repeats
            # the error (issue 17: said once).
            log.info(
                "stopped with %d record(s) still in the spool at %s: sent once a valid token is used",
                spool.depth,
                self.config.spool_dir,
            )
            return
        deadline = time.monotonic() + self.config.shutdown_flush_s
        try:
            sender.send_pending(force=True, deadline=deadline)
        except SpoolError as exc:
            log.error("last send failed: %s", exc)
        if spool.depth:
            log.info(
                "stopped with %d record(s) still in the spool at %s: they are sent at the next start",
                spool.depth,
                self.config.spool_dir,
            )
        else:
            log.info("stopped: every record was sent")
