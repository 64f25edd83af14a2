"""A simulated fleet of KVM hosts: fake host roots (agent/fakehost.py) that keep changing like real ones.

`Fleet(root, hosts=12, seed=0).build()` lays out one FakeHost per host under `root/<hostname>/`;
each `tick()` advances every host by `tick_s` seconds of simulated time: guests split-lock in
bursts, the kernel prints what a real kernel of that version and mode would print, a fatal host
kills a guest, a host's detection drifts off on some cores, and the odd kmsg overrun, suppressed
line or forged record turns up. An agent pointed at a host root (`splitwatch agent --root ...`)
sees exactly what it would see on such a host.

Deterministic: a seed fixes the sequence of actions (which guest traps when, how often, what is
printed, which PIDs). Record times follow the wall clock (FakeHost live=True), so a dashboard shows
them as now. The kernel behaviour imitated, by kernel version (docs/kernel.md):

- 5.19+: a task's `#AC ... took a split_lock trap` line is printed once per thread
  (`current->reported_split_lock`); 5.7-5.18: the first trap turns detection off for the rest of
  the thread's life (TIF_SLD), so it also traps, and prints, once. Without tracefs, a noisy guest
  is therefore a few first sightings; with `tracefs=True` every trap is a kprobe hit, the true count.
- Every printed trap line passes the printk rate limit of its call site (10 per 5 s,
  DEFAULT_RATELIMIT_BURST/INTERVAL); the dropped ones reappear as one `SITE: N callbacks
  suppressed` line at the next call after the window, as lib/ratelimit.c prints it.
- warn mode, 5.19+: the trapping core reads TEST_CTRL bit 29 off until the next tick (the kernel
  re-enables it ~2 ticks later), the transient "off" a single MSR read can catch. With misery
  (mitigate 1, or 5.19-6.1.1 without the sysctl) one core at a time: the others wait on the
  semaphore. With split_lock_mitigate=0 before 6.15 there is one global re-enable work item: a
  second core trapping before it runs stays off (the stuck-off bug). A core that reads off does
  not trap (detection is off there).
- warn mode, 5.7-5.18 (and RHEL 8's backport): after its first trap a thread runs with detection
  off for life (TIF_SLD): its (pinned) core reads off from then on.
- fatal mode: a vCPU's `fatal split_lock trap` line is printed once per boot (pr_warn_once, shared
  with the bogus line): the second guest killed in a boot leaves no kernel line, only its tracefs
  hit and its QEMU's exit. A user task prints `traps: ... trap alignment check` and dies.
- before 5.7 (no backport) nothing traps: the kernel has no split-lock detection.
- what is not the kernel: the drift host's cores go off (something writes MSR_TEST_CTRL), the
  inconsistent host's cores go on while it booted with detection off, and the foreign host loads
  VirtualBox's vboxdrv (issue 16's verdicts).
- ratelimit:N: #AC is off; host tasks' bus locks print `#DB: ... took a bus_lock trap` lines
  (rate limited per call site, like every printed trap line).
"""

from __future__ import annotations

import random
import shutil
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.fakehost import FakeHost, FakeVmm, VmmKind

RATELIMIT_INTERVAL_S = 5.0  # DEFAULT_RATELIMIT_INTERVAL (5 * HZ), include/linux/ratelimit_types.h
RATELIMIT_BURST = 10  # DEFAULT_RATELIMIT_BURST
FATAL_KILL_TICK = 3  # the fatal host's doomed guest traps on this tick: early, so a short demo shows it
SECOND_KILL_TICK = 8  # ... and its second doomed guest on this one: no kernel line left (pr_warn_once)
DRIFT_TICK = 4  # the drift host's cores read off from this tick on
FOREIGN_TICK = 5  # the foreign host loads vboxdrv on this tick
WRMSR_TICK = 4  # a tool turns detection on on the inconsistent host's first cores on this tick
# Two traps of one tick (a second) land within the 2 jiffies before the re-enable work runs only
# now and then: the chance that a second trapping core is left stuck off (mitigate 0, < 6.15).
STUCK_CHANCE = 0.03


class FleetError(ValueError):
    """The fleet cannot be laid out where asked."""


@dataclass
class Workload:
    """Something on a host that may split-lock: a guest (a VMM process) or a plain host process."""

    name: str  # guest name, or the process COMM for a plain process
    vmm_kind: VmmKind | None  # None: a plain host process
    rate: float  # mean traps per tick while bursting
    burst_p: float  # chance per tick that a burst starts
    vcpus: int = 2
    bus_locks: bool = False  # a plain process whose locked accesses are bus locks (#DB)
    doomed: bool = False  # the fatal host's guests that trap at FATAL_KILL_TICK and SECOND_KILL_TICK
    doom_tick: int = 0
    uuid: str | None = None
    pid: int = 0
    tids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)
    vm: FakeVmm | None = None
    alive: bool = False
    burst_left: int = 0
    respawn_at: int | None = None  # tick at which a dead workload comes back (reboot, restart)

    @property
    def is_guest(self) -> bool:
        return self.vmm_kind is not None


@dataclass
class _RateLimit:
    """lib/ratelimit.c ___ratelimit for one call site, on the simulated clock."""

    begin_s: float | None = None
    printed: int = 0
    missed: int = 0

    def allow(self, now_s: float) -> tuple[bool, int]:
        """(print this line?, N for a `callbacks suppressed` line to print first, or 0)."""
        suppressed = 0
        if self.begin_s is None:
            self.begin_s = now_s
        if now_s >= self.begin_s + RATELIMIT_INTERVAL_S:
            suppressed, self.missed = self.missed, 0
            self.begin_s, self.printed = now_s, 0
        if self.printed < RATELIMIT_BURST:
            self.printed += 1
            return True, suppressed
        self.missed += 1
        return False, suppressed


@dataclass
class SimHost:
    """One simulated host: its FakeHost, its workloads and the kernel state the simulation tracks."""

    name: str
    role: str
    kernel: str
    mode: str  # the effective split_lock_detect mode: off, warn, fatal, ratelimit:N
    fake: FakeHost
    workloads: list[Workload]
    cpu_count: int
    next_pid: int = 2000
    reported_tids: set[int] = field(default_factory=set)  # threads whose #AC line was printed
    fatal_printed: bool = False  # pr_warn_once of the KVM fatal line, per boot
    transient_off: set[int] = field(default_factory=set)
    drifted: set[int] = field(default_factory=set)
    stuck: set[int] = field(default_factory=set)  # split_lock_mitigate=0 before 6.15: never re-enabled
    tif_sld: set[int] = field(default_factory=set)  # 5.7-5.18: cores of offenders running with TIF_SLD
    limits: dict[str, _RateLimit] = field(default_factory=dict)
    killed: list[str] = field(default_factory=list)  # guests killed by SIGBUS, in order
    reboots: int = 0  # guests rebooted (a new QEMU process, new vCPU threads)

    @property
    def root(self) -> Path:
        return self.fake.root


@dataclass(frozen=True)
class _Role:
    role: str
    hostname: str
    kernel: str
    mode: str | None  # split_lock_detect= value, None: absent (the kernel's default)
    mitigate: int | None
    cpus: int
    workloads: tuple[tuple[str, VmmKind | None, float, float], ...]  # name, vmm, rate, burst_p
    knob: str | None = None  # RHEL 8's runtime knob (its backport defaults to off)


# The fleet, in order: a fleet of N hosts is the first N (then generic hosts). The fatal host is
# second, so any fleet of 2 or more shows a killed guest.
_ROLES: tuple[_Role, ...] = (
    _Role(
        "noisy",
        "kvm-fra-01",
        "6.8.0-49-generic",
        None,
        1,
        32,
        (
            ("erp-legacy-01", "libvirt", 40.0, 0.35),
            ("web-01", "libvirt", 2.0, 0.03),
            ("db-01", "libvirt", 0.0, 0.0),
            ("cache-01", "qemu", 1.0, 0.02),
        ),
    ),
    _Role(
        "fatal",
        "kvm-fra-02",
        "6.8.0-49-generic",
        "fatal",
        1,
        32,
        (
            ("ci-build-07", "libvirt", 5.0, 0.0),
            ("ci-build-08", "libvirt", 5.0, 0.0),
            ("web-02", "libvirt", 0.0, 0.0),
            ("db-02", "libvirt", 0.0, 0.0),
        ),
    ),
    _Role(
        "drift",
        "kvm-fra-03",
        "6.5.0-35-generic",
        "warn",
        1,
        16,
        (
            ("web-03", "libvirt", 2.0, 0.05),
            ("mq-01", "libvirt", 0.0, 0.0),
            ("mail-01", "libvirt", 1.0, 0.02),
        ),
    ),
    _Role(
        "old-kernel",
        "kvm-ams-01",
        "5.10.0-28-amd64",
        None,
        None,
        16,
        (
            ("win2012-app", "libvirt", 3.0, 0.05),
            ("web-04", "libvirt", 1.0, 0.02),
            ("batch-01", "qemu", 0.0, 0.0),
        ),
    ),
    _Role(
        "ratelimit",
        "kvm-ams-02",
        "6.1.0-26-amd64",
        "ratelimit:10",
        1,
        16,
        (
            ("db-05", "libvirt", 0.0, 0.0),
            ("web-05", "libvirt", 0.0, 0.0),
            ("dpdk-pmd", None, 14.0, 0.3),
        ),
    ),
    _Role(
        "proxmox",
        "pve-01",
        "6.8.12-4-pve",
        "warn",
        0,
        24,
        (
            ("gameserver-01", "proxmox", 6.0, 0.1),
            ("nas-01", "proxmox", 0.0, 0.0),
            ("ha-01", "proxmox", 1.0, 0.02),
        ),
    ),
    _Role(
        "firecracker",
        "fc-01",
        "6.1.0-26-amd64",
        None,
        1,
        32,
        (
            ("fn-3f9a", "firecracker", 2.0, 0.05),
            ("fn-77c1", "firecracker", 0.0, 0.0),
            ("fn-a002", "firecracker", 1.0, 0.03),
            ("fn-c3d4", "firecracker", 0.0, 0.0),
        ),
    ),
    _Role(
        "unsupported",
        "ch-01",
        "5.4.0-216-generic",  # Ubuntu 20.04: no split-lock detection in the kernel
        None,
        None,
        16,
        (
            ("ch-vm-01", "cloud-hypervisor", 2.0, 0.04),
            ("ch-vm-02", "cloud-hypervisor", 0.0, 0.0),
            ("crosvm-01", "crosvm", 1.0, 0.03),
            ("crosvm-02", "crosvm", 0.0, 0.0),
        ),
    ),
    _Role(
        "kata",
        "kata-01",
        "6.8.0-49-generic",
        None,
        1,
        16,
        (
            ("4c1e8a9d2b77", "kata", 2.0, 0.04),
            ("9b0d3e5f6a11", "kata", 0.0, 0.0),
            ("e2f7a6c4d0b3", "kata", 0.0, 0.0),
        ),
    ),
    _Role(
        "processes",
        "build-01",
        "6.15.2-generic",  # the stuck-off fix is in: mitigate 0 is safe here
        None,
        0,
        16,
        (
            ("CJobMgr::m_Work", None, 3.0, 0.08),
            ("java", None, 1.0, 0.05),
            ("cc1plus", None, 0.0, 0.0),
        ),
    ),
    _Role(
        "foreign",
        "kvm-par-01",
        "6.8.0-49-generic",
        None,
        1,
        32,
        (
            ("web-06", "libvirt", 1.0, 0.03),
            ("db-06", "libvirt", 0.0, 0.0),
            ("analytics-01", "libvirt", 4.0, 0.06),
        ),
    ),
    _Role(
        "inconsistent",
        "kvm-par-02",
        "6.6.58-generic",
        "off",
        1,
        32,
        (
            ("web-07", "libvirt", 1.0, 0.03),
            ("vdi-01", "libvirt", 2.0, 0.04),
            ("vdi-02", "qemu", 0.0, 0.0),
        ),
    ),
    # Past the default dozen: one host per kernel era the verdict knows (issue 16).
    _Role(
        "rhel-knob-off",
        "rhel-01",
        "4.18.0-394.el8.x86_64",
        None,
        None,
        16,
        (("erp-01", "libvirt", 2.0, 0.05), ("web-08", "libvirt", 0.0, 0.0)),
        knob="off",
    ),
    _Role(
        "rhel-knob-warn",
        "rhel-02",
        "4.18.0-394.el8.x86_64",
        None,
        None,
        16,
        (("erp-02", "libvirt", 2.0, 0.05), ("web-09", "libvirt", 1.0, 0.02)),
        knob="warn",
    ),
    _Role(
        "ratelimit-fallback",
        "kvm-old-02",
        "5.13.0-52-generic",
        "ratelimit:5",  # 5.14+ only: this kernel falls back to warn
        None,
        16,
        (("web-10", "libvirt", 1.0, 0.03), ("db-10", "libvirt", 0.0, 0.0)),
    ),
    _Role(
        "per-task",
        "kvm-old-03",
        "5.15.0-126-generic",
        None,
        None,
        16,
        (("win2016-app", "libvirt", 3.0, 0.05), ("web-11", "libvirt", 0.0, 0.0)),
    ),
    _Role(
        "misery-no-sysctl",
        "kvm-new-01",
        "5.19.0-50-generic",
        None,
        None,
        16,
        (("web-12", "libvirt", 2.0, 0.05), ("db-12", "libvirt", 0.0, 0.0)),
    ),
    _Role(
        "misery-no-sysctl",
        "kvm-new-02",
        "6.1.0-1-amd64",  # 6.1.0-6.1.1: misery mode but not yet the sysctl
        None,
        None,
        16,
        (("web-13", "libvirt", 2.0, 0.05), ("db-13", "libvirt", 0.0, 0.0)),
    ),
    _Role(
        "stuck-era",
        "kvm-new-03",
        "6.6.58-generic",
        None,
        0,
        16,
        (("web-14", "libvirt", 3.0, 0.1), ("app-14", "libvirt", 3.0, 0.1)),
    ),
    _Role(
        "fixed",
        "kvm-new-04",
        "6.15.2-generic",
        None,
        0,
        16,
        (("web-15", "libvirt", 3.0, 0.1), ("app-15", "libvirt", 3.0, 0.1)),
    ),
)


class Fleet:
    """N simulated hosts under `root`; `build()` once, then `tick()` as often as wanted."""

    def __init__(
        self,
        root: Path,
        *,
        hosts: int = 12,
        seed: int = 0,
        tick_s: float = 1.0,
        tracefs: bool = False,
        live: bool = True,
    ) -> None:
        if hosts < 1:
            raise ValueError(f"a fleet needs at least 1 host, not {hosts}")
        if tick_s <= 0:
            raise ValueError(f"tick must be a positive number of seconds, not {tick_s}")
        self.root = Path(root)
        self.host_count = hosts
        self.seed = seed
        self.tick_s = tick_s
        self.tracefs = tracefs
        self.live = live
        self.hosts: list[SimHost] = []
        self.ticks = 0
        self._rng = random.Random(seed)

    @property
    def now_s(self) -> float:
        """Simulated seconds since build: the clock of the kernel behaviour (rate limits, ticks)."""
        return self.ticks * self.tick_s

    def build(self) -> list[Path]:
        """Lay out every host (boot messages, guests running); returns the host roots."""
        self.root.mkdir(parents=True, exist_ok=True)
        for index in range(self.host_count):
            self.hosts.append(self._build_host(index))
        return [h.root for h in self.hosts]

    def _role(self, index: int) -> _Role:
        if index < len(_ROLES):
            return _ROLES[index]
        # Beyond the named hosts: generic libvirt hosts with a few guests of varied noise.
        n = index - len(_ROLES) + 1
        return _Role(
            "libvirt",
            f"kvm-ext-{n:02d}",
            ("6.8.0-49-generic", "6.6.58-generic", "6.1.0-26-amd64")[n % 3],
            None,
            1,
            32,
            (
                (f"web-x{n:02d}", "libvirt", 1.0, 0.03),
                (f"db-x{n:02d}", "libvirt", 0.0, 0.0),
                (f"app-x{n:02d}", "libvirt", 3.0, 0.05),
            ),
        )

    def _build_host(self, index: int) -> SimHost:
        role = self._role(index)
        target = self.root / role.hostname
        if target.exists():
            if not (target / "proc/sys/kernel/random/boot_id").is_file():
                raise FleetError(
                    f"{target} exists and is not a fake host: choose an empty or a previous simulate --root"
                )
            # A previous run's host: start afresh (a new boot), or its old log would mix with the new.
            shutil.rmtree(target)
        seed = self._rng.getrandbits(32)
        fake = FakeHost(
            target,
            hostname=role.hostname,
            live=self.live,
            seed=seed,
            # Live: a fresh boot_id per run, so a backend that kept an earlier run's events (same
            # host, same SEQs) does not take the new ones for duplicates. Not live: from the seed.
            boot_id=str(uuidlib.uuid4()) if self.live else "",
        )
        fake.kernel(role.kernel).mode(role.mode).mitigate(role.mitigate)
        if role.knob is not None:
            fake.default_mode("off").knob(role.knob)  # RHEL 8's backport: default off, runtime knob
        fake.cpus(role.cpus)
        if self.tracefs:
            fake.tracefs()
            # Only the handlers this kernel has can be probed: split_lock_warn is 5.19+,
            # handle_bus_lock 5.13+; before 5.19 user tasks go through handle_user_split_lock.
            functions = ["handle_guest_split_lock", "handle_user_split_lock"]
            if fake.kernel_version >= (5, 13):
                functions.append("handle_bus_lock")
            if fake.kernel_version >= (5, 19):
                functions.append("split_lock_warn")
            (fake.root / "sys/kernel/tracing/available_filter_functions").write_text(
                "".join(f"{f}\n" for f in sorted(functions))
            )
        fake.boot_messages()
        host = SimHost(role.hostname, role.role, role.kernel, fake.effective_mode, fake, [], role.cpus)
        doomed = 0
        for name, vmm_kind, rate, burst_p in role.workloads:
            work = Workload(
                name,
                vmm_kind,
                rate,
                burst_p,
                vcpus=4 if rate >= 20 else 2,
                bus_locks=role.mode is not None and role.mode.startswith("ratelimit:") and vmm_kind is None,
                doomed=role.role == "fatal" and rate > 0,
                uuid=str(uuidlib.UUID(int=self._rng.getrandbits(128), version=4)) if vmm_kind else None,
            )
            if work.doomed:
                work.doom_tick = (FATAL_KILL_TICK, SECOND_KILL_TICK)[min(doomed, 1)]
                doomed += 1
            host.workloads.append(work)
            self._spawn(host, work)
        return host

    def _spawn(self, host: SimHost, work: Workload) -> None:
        pid = host.next_pid
        host.next_pid += 100 + self._rng.randrange(50)
        if work.vmm_kind is None:
            host.fake.process(work.name, pid)  # single-threaded: the trapping thread is the leader
            work.pid, work.tids, work.comms, work.vm = pid, [pid], [work.name], None
        else:
            vm = host.fake.vmm(work.vmm_kind, work.name, pid=pid, vcpus=work.vcpus, uuid=work.uuid)
            work.pid, work.vm = pid, vm
            work.tids = list(vm.vcpu_tids)
            work.comms = [vm.vcpu_comm(i) for i in range(len(vm.vcpu_tids))]
        work.alive, work.respawn_at, work.burst_left = True, None, 0

    def _kill(self, host: SimHost, work: Workload, *, respawn_in: int | None) -> None:
        host.fake.kill(work.pid)
        work.alive = False
        work.respawn_at = self.ticks + respawn_in if respawn_in is not None else None

    # -- one tick ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance every host by one tick of `tick_s` simulated seconds."""
        self.ticks += 1
        for host in self.hosts:
            self._tick_host(host)

    def _tick_host(self, host: SimHost) -> None:
        rng = self._rng
        # The kernel re-enabled detection on cores that trapped last tick (5.19+ warn mode), except
        # where the stuck-off bug left them off.
        for cpu in sorted(host.transient_off - host.drifted - host.stuck):
            host.fake.cpu_state(cpu, sld_on=True)
        host.transient_off.clear()
        if host.role == "foreign" and self.ticks == FOREIGN_TICK:
            # Someone installs VirtualBox on the KVM host: vboxdrv knows nothing of split-lock #AC.
            host.fake.modules("kvm_intel", "kvm", "vboxdrv", "vboxnetflt")
        if host.role == "inconsistent" and self.ticks == WRMSR_TICK:
            # Booted with split_lock_detect=off, yet a tuning tool sets bit 29 on two cores.
            for cpu in (0, 1):
                host.fake.cpu_state(cpu, sld_on=True)
        if host.role == "drift" and self.ticks == DRIFT_TICK:
            # Detection silently goes off on a quarter of the cores while the mode says warn.
            first = host.cpu_count // 2
            host.drifted = set(range(first, first + max(1, host.cpu_count // 4)))
            for cpu in sorted(host.drifted):
                host.fake.cpu_state(cpu, sld_on=False)
        for work in host.workloads:
            if not work.alive:
                if work.respawn_at is not None and self.ticks >= work.respawn_at:
                    self._spawn(host, work)
                continue
            self._tick_workload(host, work)
        # Rare host-wide happenings, a few times an hour per host at a 1 s tick.
        roll = rng.random()
        if roll < 0.002:
            host.fake.overrun(rng.randrange(20, 200))
        elif roll < 0.003:
            # Someone echoes a split-lock line into /dev/kmsg: facility 1 (user), the agent must not trust it.
            host.fake.forged(
                "x86/split lock detection: #AC: CPU 0/KVM/31337 took a split_lock trap at address: 0x0"
            )
        elif roll < 0.005:
            guests = [w for w in host.workloads if w.alive and w.is_guest and not w.doomed]
            if guests:
                # A guest reboots: a new QEMU process, new vCPU threads, new first sightings.
                self._kill(host, rng.choice(guests), respawn_in=2)
                host.reboots += 1

    def _tick_workload(self, host: SimHost, work: Workload) -> None:
        rng = self._rng
        if work.doomed:
            if self.ticks == work.doom_tick:
                self._trap(host, work, 0)
            return
        if work.burst_left == 0 and work.burst_p > 0 and rng.random() < work.burst_p:
            work.burst_left = rng.randrange(1, 6)
        if work.burst_left == 0:
            return
        work.burst_left -= 1
        count = max(0, round(rng.expovariate(1.0 / work.rate))) if work.rate > 0 else 0
        for _ in range(count):
            if not work.alive:
                break  # killed by an earlier trap of this tick (fatal mode)
            self._trap(host, work, rng.randrange(len(work.tids)))

    def _print(self, host: SimHost, site: Literal["split_lock_warn", "handle_bus_lock"]) -> bool:
        """printk_ratelimited for one call site; prints the `callbacks suppressed` line when due."""
        limit = host.limits.setdefault(site, _RateLimit())
        allowed, suppressed = limit.allow(self.now_s)
        if suppressed:
            host.fake.suppressed(suppressed, site)
        return allowed

    def _trap(self, host: SimHost, work: Workload, thread: int) -> None:
        fake, rng = host.fake, self._rng
        tid, comm = work.tids[thread], work.comms[thread]
        address = (
            f"0xffffffff{rng.randrange(0x81000000, 0x82000000):08x}"  # guest kernel code
            if work.is_guest and rng.random() < 0.3
            else f"0x{rng.randrange(0x400000, 0x7FFFFFFF):x}"
        )
        mode = host.mode
        # A core reading off does not trap: detection is off there.
        quiet = host.drifted | host.transient_off | host.stuck | host.tif_sld
        on = [c for c in range(host.cpu_count) if c not in quiet] or list(range(host.cpu_count))
        cpu = on[rng.randrange(len(on))]
        if mode == "off":
            return
        if mode.startswith("ratelimit:"):
            if not work.bus_locks:
                return  # #AC is off in ratelimit mode; a guest's bus locks exit to its VMM, not #DB
            if self.tracefs:
                fake.trace_hit("handle_bus_lock", comm, tid, cpu)
            if self._print(host, "handle_bus_lock"):
                fake.bus_lock(comm, tid, address)
            return
        if mode == "fatal":
            if work.is_guest:
                if self.tracefs:
                    fake.trace_hit("handle_guest_split_lock", comm, tid, cpu)
                if not host.fatal_printed:
                    host.fatal_printed = True
                    fake.split_lock(comm, tid, address, verb="fatal")
                host.killed.append(work.name)
                self._kill(host, work, respawn_in=None)  # QEMU died of the vCPU's SIGBUS
            else:
                fake.alignment_trap(comm, tid, address[2:])
                self._kill(host, work, respawn_in=3)  # the service manager restarts it
            return
        # warn: the line once per thread, every trap a kprobe hit, the core briefly off (5.19+).
        misery = fake.kernel_version >= (5, 19)
        if tid in host.reported_tids:
            if not misery:
                return  # TIF_SLD: detection stays off while this thread runs; it never traps again
        else:
            # reported_split_lock is set whether or not the rate limit let the line through.
            host.reported_tids.add(tid)
            if self._print(host, "split_lock_warn"):
                fake.split_lock(comm, tid, address)
        if self.tracefs and (work.is_guest or misery):
            # Before 5.19 a user task's trap goes through handle_user_split_lock: no probe of ours.
            probe = "handle_guest_split_lock" if work.is_guest else "split_lock_warn"
            fake.trace_hit(probe, comm, tid, cpu)
        if not misery:
            # 5.7-5.18: the thread runs on with TIF_SLD; its (pinned) vCPU's core reads off.
            host.tif_sld.add(cpu)
            fake.cpu_state(cpu, sld_on=False)
            return
        semaphore = fake.sysctl_mitigate != 0  # misery: one core off at a time (mitigate 1, or no sysctl)
        stuck_bug = fake.sysctl_mitigate == 0 and fake.kernel_version < (6, 15)
        if semaphore and host.transient_off:
            return  # waits on buslock_sem; the core that holds it is the one off
        if stuck_bug and host.transient_off and rng.random() < STUCK_CHANCE:
            # The one global re-enable work is already pending: this core is never turned back on.
            host.stuck.add(cpu)
        host.transient_off.add(cpu)
        fake.cpu_state(cpu, sld_on=False)

    def summary(self) -> list[str]:
        """One line per host: root, role, kernel, mode, guests."""
        lines = []
        for h in self.hosts:
            guests = ", ".join(w.name for w in h.workloads if w.is_guest) or "no guests"
            plain = [w.name for w in h.workloads if not w.is_guest]
            extra = f"; processes: {', '.join(plain)}" if plain else ""
            lines.append(f"{h.root}  [{h.role}] kernel {h.kernel}, mode {h.mode}: {guests}{extra}")
        return lines
