"""One collection pass over a host: every source read once, assembled into ingest payloads.

    procfs + msr          -> HostInfo, HostState (mode, mitigate, per-CPU TEST_CTRL/DEBUGCTL)
    kmsg since the cursor -> events (guest from GuestResolver, action from derive_action), gaps
    tracefs kprobe hits   -> events with true counts (optional)

Guarantees:
- `collect()` never raises on host trouble: a source that fails is reported (per-CPU errors in
  the state, the sentence in `Collected.errors`, a warning on the `splitwatch.agent` logger) and
  the pass goes on with what is known.
- Nothing is acknowledged before `Collected.commit()`: the kmsg cursor, the tracefs event
  counter and the guest cache are persisted (atomically, agent/state.py) only then. The agent
  loop commits after the payloads are durably spooled; a pass that is not committed is read
  again by the next one (kmsg rewinds to the committed cursor, tracefs events are kept and
  re-sent with the same SEQs), so the backend's dedup on (host, boot_id, source, seq) makes a
  resend harmless.
- No trap counted twice, every count says its source (DESIGN.md §1): without tracefs a kmsg
  trap line counts 1. Once the kprobes run, their hits are the counts (source tracefs) and a
  kmsg line the probes also see is a sighting with count 0 that still carries the address.
- A pass with more than `max_events` events is split into several payloads (state and gaps on
  the first only), all committed by the one `commit()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import agent
from agent.errors import ConfigError, ParseError
from agent.host import HostRoot
from agent.kernel.modes import (
    PROBE_HANDLE_BUS_LOCK,
    PROBE_HANDLE_GUEST_SPLIT_LOCK,
    PROBE_SPLIT_LOCK_WARN,
    UNKNOWN_KERNEL,
    derive_action,
    parse_kernel_release,
)
from agent.payload import (
    CpuState,
    Event,
    Gap,
    GapReason,
    HostInfo,
    HostState,
    Kind,
    Mode,
    Payload,
    Source,
)
from agent.sources import msr as msr_source
from agent.sources import procfs as procfs_source
from agent.sources.guests import GuestResolver
from agent.sources.kmsg import KmsgCursor, KmsgSource, KmsgTrap
from agent.sources.procfs import ProcfsResult
from agent.state import AgentState, load_state, save_state

if TYPE_CHECKING:
    from agent.sources.tracefs import TracefsSource

log = logging.getLogger("splitwatch.agent")

MAX_EVENTS_PER_PAYLOAD = 1000  # the backend's batch size (AgentConfig.batch_max_events)
_DRAIN_ROUNDS = 64


@dataclass(frozen=True)
class Collected:
    """The payloads of one pass and how to acknowledge them (call once they are durable)."""

    payloads: list[Payload]
    commit: Callable[[], None]
    statuses: dict[str, str] = field(default_factory=dict)  # source -> ok|absent|denied|failed|off
    errors: tuple[str, ...] = ()  # one sentence per problem met in this pass

    @property
    def payload(self) -> Payload:
        """The first payload (the one with the host state)."""
        return self.payloads[0]

    @property
    def event_count(self) -> int:
        return sum(len(p.events) for p in self.payloads)


@dataclass
class _Tracefs:
    """The running kprobes and what the collector knows about them."""

    source: TracefsSource
    from_seq: int  # kmsg records from this SEQ on happened while the probes counted
    probes: frozenset[str]  # probes that count; a trap no probe sees keeps its kmsg count of 1


class Collector:
    """Collects one host under `root`; keeps sources open between passes (call `close()`).

    `state_dir` None: nothing is persisted, every Collector starts at the beginning of the log.
    """

    def __init__(
        self,
        root: Path,
        state_dir: Path | None,
        *,
        use_tracefs: bool = True,
        max_events: int = MAX_EVENTS_PER_PAYLOAD,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ConfigError(
                f"host root {root} is not a directory: pass the root of the host to watch (--root /)"
            )
        self._host = HostRoot.at(root)
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._use_tracefs = use_tracefs
        self._max_events = max(1, max_events)
        self._state = AgentState()
        if self._state_dir is not None:
            self._state, warning = load_state(self._state_dir)
            if warning:
                log.warning("%s", warning)
        self._kmsg = KmsgSource(self._host)
        self._guests: GuestResolver | None = None  # made at the first pass, once the boot is known
        self._boot_id = self._state.boot_id  # the boot the guest cache and tracefs SEQs belong to
        self._tracefs: _Tracefs | None = None
        self._tracefs_tried = False
        self._tracefs_status = "off"  # when not running: off (not asked), absent, denied, failed
        # tracefs events read but not yet committed: a real trace_pipe cannot be read twice.
        self._tracefs_pending: list[Event] = []
        self._tracefs_pending_gaps: list[Gap] = []
        self._tracefs_next_seq = self._state.tracefs_next_seq
        self._reported: set[str] = set()  # problems already logged, so a broken host is not a log flood

    # -- one pass -------------------------------------------------------------------------------

    def collect(self) -> Collected:
        errors: list[str] = []
        statuses: dict[str, str] = {}
        procfs = procfs_source.collect(self._host)
        errors.extend(procfs.errors)
        statuses["procfs"] = "ok" if not procfs.errors else "failed"
        kernel = _kernel(procfs.kernel)
        mode, ratelimit = procfs.mode, procfs.ratelimit
        mitigate: Literal[0, 1] | None = 1 if procfs.mitigate == 1 else 0 if procfs.mitigate == 0 else None
        boot_id = procfs.boot_id
        state = self._state
        if self._boot_id != boot_id:
            self._new_boot(boot_id)
        if self._guests is None:
            cache = state.guest_cache if state.boot_id == boot_id else None
            self._guests = GuestResolver(self._host, cache=cache, boot_id=boot_id)
        guests = self._guests

        host_state = self._host_state(procfs, mode, ratelimit, mitigate, errors, statuses)

        cursor = (
            KmsgCursor(state.boot_id, state.kmsg_next_seq)
            if state.boot_id is not None and state.kmsg_next_seq is not None
            else None
        )
        kmsg = self._kmsg.collect(cursor, boot_id=boot_id, btime=procfs.btime)
        statuses["kmsg"] = kmsg.status
        if kmsg.error:
            errors.append(kmsg.error)
        if kmsg.forged:
            log.warning(
                "%d record(s) in %s are shaped like split-lock lines but were written by a process "
                "(facility >= 1), not the kernel: ignored and counted as forged gaps",
                kmsg.forged,
                self._host.path("dev/kmsg"),
            )

        # Refresh before resolving: a guest alive at the previous pass is in the cache even if
        # its QEMU died of this pass's SIGBUS.
        guests.refresh()

        tracefs = self._tracefs_pass(kmsg.cursor.next_seq, errors, statuses)
        events: list[Event] = []
        for trap in kmsg.traps:
            events.append(self._kmsg_event(trap, guests, tracefs, mode, mitigate, kernel))
        if tracefs is not None:
            new_events, new_gaps = self._tracefs_events(
                tracefs, guests, procfs.btime, mode, mitigate, kernel, errors, statuses
            )
            self._tracefs_pending.extend(new_events)
            self._tracefs_pending_gaps.extend(new_gaps)
        # Uncommitted tracefs events and gaps of earlier passes go again, with their SEQs.
        tracefs_events = list(self._tracefs_pending)
        tracefs_gaps = list(self._tracefs_pending_gaps)
        events.extend(tracefs_events)
        if tracefs is None:
            statuses["tracefs"] = self._tracefs_status

        for problem in errors:
            if problem not in self._reported:
                self._reported.add(problem)
                log.warning("%s", problem)

        host = HostInfo(
            name=procfs.hostname,
            boot_id=boot_id,
            kernel=procfs.kernel,
            cpu_model=procfs.cpu_model,
            agent_version=agent.__version__,
        )
        payloads = self._split(host, host_state, events, (*kmsg.gaps, *tracefs_gaps))
        sent = (len(tracefs_events), len(tracefs_gaps))
        if kmsg.status == "ok" or kmsg.records_read:
            next_seq: int | None = kmsg.cursor.next_seq
        else:
            # Nothing read (denied, absent): keep the position we had; a first run stays a first run.
            next_seq = state.kmsg_next_seq if state.boot_id == boot_id else None
        new_state = AgentState(
            boot_id=boot_id,
            kmsg_next_seq=next_seq,
            tracefs_next_seq=self._tracefs_next_seq,
            guest_cache=guests.cache_snapshot(),
        )

        def commit() -> None:
            self._commit(new_state, *sent)

        return Collected(payloads, commit, statuses, tuple(errors))

    def _new_boot(self, boot_id: str) -> None:
        if self._boot_id is not None:
            # SEQs restart, TIDs are reused, the previous boot's guests are gone.
            log.info("new boot %s: reading its kernel log from the start", boot_id)
            self._guests = None
            self._tracefs_next_seq = 0
            self._tracefs_pending, self._tracefs_pending_gaps = [], []
            if self._tracefs is not None:
                self._tracefs.from_seq = 0
        # The persisted kmsg cursor stays: KmsgSource sees its other boot_id and starts at 0,
        # reporting as overrun what the ring lost before the oldest record.
        self._boot_id = boot_id

    def _host_state(
        self,
        procfs: ProcfsResult,
        mode: Mode,
        ratelimit: int | None,
        mitigate: Literal[0, 1] | None,
        errors: list[str],
        statuses: dict[str, str],
    ) -> HostState:
        msr = msr_source.collect(self._host, sld_flag=procfs.sld_flag)
        statuses["msr"] = msr.status
        cpus = tuple(msr.cpus)
        if msr.status == "ok":
            errors.extend(c.error for c in cpus if c.error)  # a few broken CPUs, each named
        elif msr.error:
            errors.append(msr.error)  # one sentence for the whole host
        if not cpus and msr.status != "ok" and procfs.cpu_count:
            # No MSR readable at all: still list the CPUs, each with the reason, so the
            # backend shows "unknown" per core rather than a host without cores.
            reason = msr.error or "MSRs not readable"
            cpus = tuple(CpuState(n, None, None, None, reason) for n in range(procfs.cpu_count))
        return HostState(
            observed_at=datetime.now(timezone.utc),
            mode=mode,
            ratelimit=ratelimit,
            mitigate=mitigate,
            sld_supported=bool(procfs.sld_flag or msr.sld_supported),
            bld_supported=bool(procfs.bld_flag),
            cpus=cpus,
        )

    def _kmsg_event(
        self,
        trap: KmsgTrap,
        guests: GuestResolver,
        tracefs: _Tracefs | None,
        mode: Mode,
        mitigate: Literal[0, 1] | None,
        kernel: tuple[int, int],
    ) -> Event:
        t = trap.trap
        tgid, guest = guests.resolve(t.tid, t.comm)
        action = derive_action(
            t.kind, t.verb, mode=mode, mitigate=mitigate, kernel=kernel, guest=guest is not None
        )
        count = 1
        if tracefs is not None and trap.seq >= tracefs.from_seq:
            probe = _counting_probe(t.kind, t.verb, guest=guest is not None)
            if probe is not None and probe in tracefs.probes:
                count = 0  # a sighting: the probe's hits are this trap's count
        return Event(
            source=Source.KMSG,
            seq=trap.seq,
            time=trap.time,
            kind=t.kind,
            comm=t.comm,
            tid=t.tid,
            tgid=tgid,
            address=t.address,
            count=count,
            action=action,
            guest=guest,
        )

    # -- tracefs --------------------------------------------------------------------------------

    def _tracefs_pass(
        self, kmsg_next_seq: int, errors: list[str], statuses: dict[str, str]
    ) -> _Tracefs | None:
        """The running probes, starting them on the first pass (after kmsg was read)."""
        if self._tracefs is not None or not self._use_tracefs or self._tracefs_tried:
            return self._tracefs
        self._tracefs_tried = True
        from agent.sources.tracefs import TracefsSource  # only when counting with kprobes

        source = TracefsSource(self._host)
        problem = source.start()
        if not source.probes:
            status = source.collect().status  # absent, denied or failed, as start() found it
            source.close()
            self._tracefs_status = status
            if status == "absent":
                log.info("%s", problem)  # no tracefs is a normal host: counts are first sightings
            else:
                errors.append(problem or "tracefs: no kprobe could be registered")
            return None
        if problem is not None:
            errors.append(problem)  # some probes failed; the others count
        probes = frozenset(source.probes)
        # Hits already waiting (a previous agent's probes left behind by a kill -9, a fake
        # host's history) predate this collector's count: the kmsg lines read so far counted
        # them. Drain them so nothing is counted twice.
        # A collect() reads at most a few MB; a long history takes several. Bounded, because a
        # busy real trace_pipe always has something new.
        drained = 0
        for _ in range(_DRAIN_ROUNDS):
            old = source.collect()
            drained += sum(h.count for h in old.hits)
            if not old.hits and not old.lost:
                break
        if drained:
            log.info(
                "tracefs: %d hit(s) from before the agent started ignored (the kernel log counted them)",
                drained,
            )
        self._tracefs = _Tracefs(source, kmsg_next_seq, probes)
        return self._tracefs

    def _tracefs_events(
        self,
        tracefs: _Tracefs,
        guests: GuestResolver,
        btime: int,
        mode: Mode,
        mitigate: Literal[0, 1] | None,
        kernel: tuple[int, int],
        errors: list[str],
        statuses: dict[str, str],
    ) -> tuple[list[Event], list[Gap]]:
        result = tracefs.source.collect()
        statuses["tracefs"] = result.status
        if result.status != "ok":
            # Counting stops: from here kmsg lines count 1 again, as without tracefs.
            errors.append(result.error or "tracefs: the kprobe hits could not be read")
            tracefs.source.close()
            self._tracefs = None
            self._tracefs_status = result.status
            return [], []
        gaps: list[Gap] = []
        if result.lost:
            # `[LOST N EVENTS]`: the trace ring overflowed between two reads. The gap takes a SEQ
            # of its own so two such losses are never one row.
            seq = self._tracefs_next_seq
            self._tracefs_next_seq += 1
            gaps.append(Gap(Source.TRACEFS, seq, seq, result.lost, GapReason.OVERRUN))
        guest_tids = {h.tid for h in result.hits if h.probe == PROBE_HANDLE_GUEST_SPLIT_LOCK}
        events: list[Event] = []
        boot = datetime.fromtimestamp(btime, timezone.utc)
        for hit in result.hits:
            if hit.probe == PROBE_SPLIT_LOCK_WARN and hit.tid in guest_tids:
                # 5.19+ handle_guest_split_lock() calls split_lock_warn() in warn mode: the same
                # guest traps hit both probes; the guest probe's hits are their count.
                continue
            kind = Kind.BUS_LOCK if hit.probe == PROBE_HANDLE_BUS_LOCK else Kind.SPLIT_LOCK
            tgid, guest = guests.resolve(hit.tid, hit.comm)
            action = derive_action(
                kind, hit.probe, mode=mode, mitigate=mitigate, kernel=kernel, guest=guest is not None
            )
            events.append(
                Event(
                    source=Source.TRACEFS,
                    seq=self._tracefs_next_seq,
                    time=boot + timedelta(microseconds=hit.first_usec),
                    kind=kind,
                    comm=hit.comm,
                    tid=hit.tid,
                    tgid=tgid,
                    address=None,
                    count=hit.count,
                    action=action,
                    guest=guest,
                )
            )
            self._tracefs_next_seq += 1
        return events, gaps

    # -- payloads and commit ----------------------------------------------------------------------

    def _split(
        self, host: HostInfo, state: HostState, events: list[Event], gaps: tuple[Gap, ...]
    ) -> list[Payload]:
        chunks = [events[i : i + self._max_events] for i in range(0, len(events), self._max_events)] or [[]]
        payloads = [Payload(host=host, state=state, events=tuple(chunks[0]), gaps=gaps)]
        payloads.extend(Payload(host=host, state=None, events=tuple(c)) for c in chunks[1:])
        return payloads

    def _commit(self, new_state: AgentState, events_sent: int, gaps_sent: int) -> None:
        if self._state_dir is not None:
            save_state(self._state_dir, new_state)
        self._state = new_state
        # The tracefs events and gaps this pass carried are acknowledged; later ones stay pending.
        self._tracefs_pending = self._tracefs_pending[events_sent:]
        self._tracefs_pending_gaps = self._tracefs_pending_gaps[gaps_sent:]

    def close(self) -> None:
        """Remove the kprobes (only ours) and close the kernel log."""
        if self._tracefs is not None:
            self._tracefs.source.close()
            self._tracefs = None
        self._kmsg.close()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kernel(release: str) -> tuple[int, int]:
    try:
        return parse_kernel_release(release)
    except ParseError:
        return UNKNOWN_KERNEL  # derive_action answers `unknown` where the era matters


def _counting_probe(kind: Kind, verb: str, *, guest: bool) -> str | None:
    """The kprobe whose hits count the trap behind a kmsg line, None if no probe sees it."""
    if kind is Kind.BUS_LOCK:
        return PROBE_HANDLE_BUS_LOCK
    if verb in ("fatal", "bogus"):
        return PROBE_HANDLE_GUEST_SPLIT_LOCK
    if verb == "took":
        return PROBE_HANDLE_GUEST_SPLIT_LOCK if guest else PROBE_SPLIT_LOCK_WARN
    return None  # alignment_check: a fatal-mode user task's SIGBUS; no probe is on that path
