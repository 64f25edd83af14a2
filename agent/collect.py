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
- No trap counted twice, every count says its source (docs/kernel.md): without tracefs a kmsg
  trap line counts 1. Once the kprobes run, their hits are the counts (source tracefs) and a
  kmsg line the probes also see is a sighting with count 0 that still carries the address.
- A pass with more than `max_events` events is split into several payloads (state and gaps on
  the first only), all committed by the one `commit()`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import agent
from agent import evidence
from agent.errors import ConfigError, ParseError
from agent.host import HostRoot
from agent.kernel import consistency
from agent.kernel.modes import (
    PROBE_HANDLE_BUS_LOCK,
    PROBE_HANDLE_GUEST_SPLIT_LOCK,
    PROBE_SPLIT_LOCK_WARN,
    UNKNOWN_KERNEL,
    VERB_ALIGNMENT_CHECK,
    derive_action,
    parse_kernel_release,
)
from agent.payload import (
    Action,
    CpuState,
    Event,
    Gap,
    GapReason,
    Guest,
    HostInfo,
    HostState,
    Kind,
    Mode,
    Payload,
    Source,
    format_time,
)
from agent.sources import msr as msr_source
from agent.sources import procfs as procfs_source
from agent.sources.guests import GuestResolver
from agent.sources.kmsg import KmsgCursor, KmsgResult, KmsgSource, KmsgTrap
from agent.sources.procfs import ProcfsResult
from agent.state import AgentState, load_state, save_state

if TYPE_CHECKING:
    from agent.sources.tracefs import TracefsSource

log = logging.getLogger("splitwatch.agent")

MAX_EVENTS_PER_PAYLOAD = 1000  # the backend's batch size (AgentConfig.batch_max_events)
# The boot_id sent while proc/sys/kernel/random/boot_id has never been readable (issue 16).
UNKNOWN_BOOT = "unknown"
# Kills the agent infers from a VMM's exit are numbered from here under source kmsg: the kernel's
# SEQs (one per record since boot) never come near 2**62, so the two never collide (docs/agent.md).
INFERRED_SEQ_BASE = 1 << 62
# How a sigbus event's kill was known (events[].evidence, docs/api.md).
EVIDENCE_KERNEL_LINE = "kernel_line"
EVIDENCE_TRACEFS = "tracefs"
EVIDENCE_VMM_EXIT = "vmm_exit"
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
        # Kills inferred from a VMM's exit (fatal mode, no kernel line left), not yet committed.
        self._inferred_pending: list[Event] = []
        self._event_cpus: dict[tuple[Source, int], tuple[int, ...]] = {}  # tracefs event -> its CPUs
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
        state = self._state
        # An unreadable boot_id is the boot we were in, not a new one (issue 16): a new key would
        # make the whole kernel log be read and stored again under it.
        boot_id = procfs.boot_id or self._boot_id
        if self._boot_id != boot_id and boot_id is not None:
            self._new_boot(boot_id)
        memory = self._memory_for(boot_id)
        # An unreadable btime is this boot's remembered one, never 0 (events dated 1970).
        btime = procfs.btime if procfs.btime is not None else memory.get("btime")
        if procfs.btime is not None:
            memory["btime"] = procfs.btime
        readable_log = boot_id is not None and btime is not None
        if boot_id is None:
            boot_id = UNKNOWN_BOOT
        if self._guests is None:
            cache = state.guest_cache if state.boot_id == boot_id else None
            self._guests = GuestResolver(self._host, cache=cache, boot_id=boot_id)
        guests = self._guests

        host_state, msr = self._host_state(procfs, mode, ratelimit, mitigate, errors, statuses)

        cursor = (
            KmsgCursor(state.boot_id, state.kmsg_next_seq)
            if state.boot_id is not None and state.kmsg_next_seq is not None
            else None
        )
        if readable_log:
            assert btime is not None
            kmsg = self._kmsg.collect(cursor, boot_id=boot_id, btime=btime)
        else:
            # Without boot_id or btime a record has no key or no date: read it next pass instead.
            kmsg = KmsgResult(
                "failed",
                "kernel log not read this pass: boot_id or btime unreadable (see above); "
                "reading it later loses nothing",
                (),
                (),
                (),
                KmsgCursor(boot_id, cursor.next_seq if cursor is not None else 0),
                0,
                0,
            )
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
        evidence.note_boot_lines(memory, kmsg.boot_modes)

        # Refresh before resolving: a guest alive at the previous pass is in the cache even if
        # its QEMU died of this pass's SIGBUS.
        guests.refresh()

        tracefs = self._tracefs_pass(kmsg.cursor.next_seq, errors, statuses) if readable_log else None
        events: list[Event] = []
        sld_era = kernel >= (5, 7) or procfs.sld_flag or procfs.knob is not None
        for trap in kmsg.traps:
            if trap.trap.verb in ("fatal", "bogus"):
                # handle_guest_split_lock() prints either with one pr_warn_once: it is spent now,
                # so later guest kills of this boot leave no line (issue 16).
                memory["fatal_line"] = True
            event = self._kmsg_event(trap, guests, tracefs, mode, mitigate, kernel, sld_era=sld_era)
            if event is None:
                memory["alignment"] += 1  # not a split lock we can vouch for: counted, not an event
                continue
            events.append(event)
        trapped_cpus: frozenset[int] | None = None
        fresh_tracefs: list[Event] = []
        if tracefs is not None:
            assert btime is not None
            fresh_tracefs, new_gaps, trapped_cpus = self._tracefs_events(
                tracefs, guests, btime, mode, mitigate, kernel, errors, statuses
            )
            self._tracefs_pending.extend(fresh_tracefs)
            self._tracefs_pending_gaps.extend(new_gaps)
        for event in (*events, *fresh_tracefs):
            self._remember_event(memory, event, mode)
        if mode is Mode.FATAL and memory["fatal_line"] and tracefs is None:
            self._inferred_pending.extend(self._vmm_exit_kills(memory, guests))
        # Uncommitted tracefs and inferred events and gaps of earlier passes go again, same SEQs.
        tracefs_events = list(self._tracefs_pending)
        inferred_events = list(self._inferred_pending)
        tracefs_gaps = list(self._tracefs_pending_gaps)
        events.extend(inferred_events)
        events.extend(tracefs_events)
        if tracefs is None:
            statuses["tracefs"] = self._tracefs_status

        host_state = self._judge(memory, procfs, msr, host_state, events, trapped_cpus)

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
        sent = (len(tracefs_events), len(tracefs_gaps), len(inferred_events))
        if kmsg.status == "ok" or kmsg.records_read:
            next_seq: int | None = kmsg.cursor.next_seq
        else:
            # Nothing read (denied, absent): keep the position we had; a first run stays a first run.
            next_seq = state.kmsg_next_seq if state.boot_id == boot_id else None
        new_state = AgentState(
            boot_id=boot_id if boot_id != UNKNOWN_BOOT else state.boot_id,
            kmsg_next_seq=next_seq if boot_id != UNKNOWN_BOOT else state.kmsg_next_seq,
            tracefs_next_seq=self._tracefs_next_seq,
            guest_cache=guests.cache_snapshot(),
            consistency=memory,
        )

        def commit() -> None:
            self._commit(new_state, *sent)

        return Collected(payloads, commit, statuses, tuple(errors))

    # -- consistency ------------------------------------------------------------------------------

    def _memory_for(self, boot_id: str | None) -> dict[str, Any]:
        """This boot's consistency memory (a copy: it is persisted only by commit())."""
        state = self._state
        if boot_id is not None and state.boot_id not in (None, boot_id):
            return evidence.fresh()
        return copy.deepcopy(evidence.load(state.consistency))

    def _remember_event(self, memory: dict[str, Any], event: Event, mode: Mode) -> None:
        if event.kind is not Kind.SPLIT_LOCK:
            return
        who = event.guest.name if event.guest is not None else event.comm
        if event.action is Action.SIGBUS and event.guest is not None:
            evidence.note_killed(memory, event.guest.name)
        if mode is Mode.WARN and event.count >= 0:
            cpus = self._event_cpus.get((event.source, event.seq), ())
            evidence.note_trap(memory, who, event.tid, cpus)

    def _vmm_exit_kills(self, memory: dict[str, Any], guests: GuestResolver) -> list[Event]:
        """Guests whose VMM exited in fatal mode after this boot's one kernel kill line was spent.

        handle_guest_split_lock() prints `fatal split_lock trap` with pr_warn_once (shared with the
        bogus line): from the second kill of a boot on there is no line, and without tracefs the
        VMM's exit is all there is to see. Labelled `evidence: vmm_exit` — an inference: a guest
        shut down on purpose at that moment would be counted too (docs/agent.md).
        """
        killed = set(memory["killed"])
        out: list[Event] = []
        now = datetime.now(timezone.utc)
        for pid, identity in guests.exited:
            if identity.name in killed:
                continue
            seq = INFERRED_SEQ_BASE + memory["inferred"]
            memory["inferred"] += 1
            evidence.note_killed(memory, identity.name)
            out.append(
                Event(
                    source=Source.KMSG,
                    seq=seq,
                    time=now,
                    kind=Kind.SPLIT_LOCK,
                    comm="",
                    tid=pid,
                    tgid=pid,
                    address=None,
                    count=1,
                    action=Action.SIGBUS,
                    guest=Guest(identity.name, identity.uuid, identity.vmm, None),
                    evidence=EVIDENCE_VMM_EXIT,
                )
            )
        return out

    def _judge(
        self,
        memory: dict[str, Any],
        procfs: ProcfsResult,
        msr: msr_source.MsrResult,
        host_state: HostState,
        events: list[Event],
        trapped_cpus: frozenset[int] | None,
    ) -> HostState:
        """The consistency verdict of this sample (agent/kernel/consistency.py), then remembered."""
        now_iso = format_time(host_state.observed_at)
        evidence.note_modules(memory, procfs.hypervisor_modules, now_iso)
        readable = [c for c in host_state.cpus if c.sld_on is not None]
        cpus_off = frozenset(c.cpu for c in readable if c.sld_on is False)
        trapped = any(e.kind is Kind.SPLIT_LOCK for e in events)
        facts = evidence.evidence(
            memory,
            release=procfs.kernel,
            cmdline_mode=str(procfs.mode),
            cmdline_given=procfs.cmdline_given,
            ratelimit=procfs.ratelimit,
            cpuinfo_sld=procfs.sld_flag,
            hypervisor_flag=procfs.hypervisor_flag,
            core_caps_sld=msr.core_caps,
            msr_status=msr.status if readable else ("failed" if msr.status == "ok" else msr.status),
            msr_error=msr.error,
            cpus_on=frozenset(c.cpu for c in readable if c.sld_on),
            cpus_off=cpus_off,
            mitigate=procfs.mitigate,
            knob=procfs.knob,
            trapped=trapped,
            trapped_cpus=trapped_cpus,
        )
        judged = consistency.verdict(facts)
        evidence.remember_sample(memory, cpus_off, trapped, trapped_cpus)
        details = dict(judged.details)
        if memory["alignment"]:
            details["alignment_checks"] = memory["alignment"]
        body = {"verdict": judged.name, "reason": judged.reason, "details": details}
        return replace(host_state, consistency=body)

    def _new_boot(self, boot_id: str) -> None:
        if self._boot_id is not None:
            # SEQs restart, TIDs are reused, the previous boot's guests are gone.
            log.info("new boot %s: reading its kernel log from the start", boot_id)
            self._guests = None
            self._tracefs_next_seq = 0
            self._tracefs_pending, self._tracefs_pending_gaps = [], []
            self._inferred_pending = []
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
    ) -> tuple[HostState, msr_source.MsrResult]:
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
        state = HostState(
            observed_at=datetime.now(timezone.utc),
            mode=mode,
            ratelimit=ratelimit,
            mitigate=mitigate,
            sld_supported=bool(procfs.sld_flag or msr.sld_supported),
            bld_supported=bool(procfs.bld_flag),
            cpus=cpus,
        )
        return state, msr

    def _kmsg_event(
        self,
        trap: KmsgTrap,
        guests: GuestResolver,
        tracefs: _Tracefs | None,
        mode: Mode,
        mitigate: Literal[0, 1] | None,
        kernel: tuple[int, int],
        *,
        sld_era: bool,
    ) -> Event | None:
        """The event of one kernel line; None for an alignment-check line that is not a split lock.

        `traps: ... trap alignment check` is printed for any unhandled SIGBUS from #AC, a task that
        set EFLAGS.AC itself included: it is a split lock with action sigbus only in fatal mode on a
        kernel with split-lock detection (issue 16). Otherwise it is counted (consistency details
        `alignment_checks`), never sent as a split lock.
        """
        t = trap.trap
        if t.verb == VERB_ALIGNMENT_CHECK and not (mode is Mode.FATAL and sld_era):
            return None
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
            evidence=EVIDENCE_KERNEL_LINE if action is Action.SIGBUS else None,
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
    ) -> tuple[list[Event], list[Gap], frozenset[int] | None]:
        """This pass's tracefs events and gaps, and the CPUs split-lock hits ran on."""
        result = tracefs.source.collect()
        statuses["tracefs"] = result.status
        if result.status != "ok":
            # Counting stops: from here kmsg lines count 1 again, as without tracefs.
            errors.append(result.error or "tracefs: the kprobe hits could not be read")
            tracefs.source.close()
            self._tracefs = None
            self._tracefs_status = result.status
            return [], [], None
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
        trapped_cpus: set[int] = set()
        for hit in result.hits:
            if hit.probe != PROBE_HANDLE_BUS_LOCK:
                trapped_cpus.update(hit.cpus)
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
                    evidence=EVIDENCE_TRACEFS if action is Action.SIGBUS else None,
                )
            )
            self._event_cpus[(Source.TRACEFS, self._tracefs_next_seq)] = hit.cpus
            self._tracefs_next_seq += 1
        if len(self._event_cpus) > 4 * MAX_EVENTS_PER_PAYLOAD:
            self._event_cpus.clear()  # only this pass's events are looked up
        return events, gaps, frozenset(trapped_cpus)

    # -- payloads and commit ----------------------------------------------------------------------

    def _split(
        self, host: HostInfo, state: HostState, events: list[Event], gaps: tuple[Gap, ...]
    ) -> list[Payload]:
        chunks = [events[i : i + self._max_events] for i in range(0, len(events), self._max_events)] or [[]]
        payloads = [Payload(host=host, state=state, events=tuple(chunks[0]), gaps=gaps)]
        payloads.extend(Payload(host=host, state=None, events=tuple(c)) for c in chunks[1:])
        return payloads

    def _commit(self, new_state: AgentState, events_sent: int, gaps_sent: int, inferred_sent: int) -> None:
        if self._state_dir is not None:
            save_state(self._state_dir, new_state)
        self._state = new_state
        # The tracefs events and gaps this pass carried are acknowledged; later ones stay pending.
        self._tracefs_pending = self._tracefs_pending[events_sent:]
        self._tracefs_pending_gaps = self._tracefs_pending_gaps[gaps_sent:]
        self._inferred_pending = self._inferred_pending[inferred_sent:]

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
