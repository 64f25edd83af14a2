"""Which KVM guest a trapping thread belongs to (docs/agent.md "Which guest"). Never raises.

Live first: `proc/TID/status` (Tgid, Name) -> `proc/TGID/cmdline` + `proc/TGID/cgroup` ->
agent.kernel.vmm. A guest killed by its SIGBUS is gone before its trap is read, so `refresh()` keeps a
cache of VMM processes (tgid -> identity) and their threads (tid -> tgid, vCPU from the libvirt
cgroup); `resolve()` falls back to it when the thread has vanished or its TID was reused by a
thread of another name. `cache_snapshot()` is JSON-able: the agent persists it with its cursor, so
after a restart the traps of a guest that died just before it are still attributed.

Per refresh: one listdir of proc; argv of processes not yet known (kernel threads and plain
processes are remembered as such while their pid lives); cmdline, cgroup and task list of each
known VMM; the cgroup of each new libvirt thread once. A thread vanishing mid-read is normal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.errors import ParseError
from agent.host import HostRoot
from agent.kernel import procfs, vmm
from agent.payload import Guest

CACHE_VERSION = 1
# A dead VMM stays attributable for this many refreshes (an hour at the 10 s default interval) ...
DEAD_REFRESHES_KEPT = 360
# ... and at most this many dead VMMs are kept (a host that churns micro-VMs must not grow us).
DEAD_VMMS_KEPT = 256
_UNKNOWN_COMM = "<...>"  # trace_pipe's name for a pid whose comm it no longer has


@dataclass
class _Vmm:
    identity: vmm.VmmIdentity
    alive: bool = True
    dead_refreshes: int = 0
    tids: set[int] = field(default_factory=set)  # threads seen in it (index into _threads)


class GuestResolver:
    def __init__(self, host: HostRoot, cache: dict[str, Any] | None = None, *, boot_id: str | None = None):
        """`boot_id`: when given, a cache written in another boot is dropped (its TIDs mean nothing now)."""
        self._host = host
        self._boot_id = boot_id
        self._vmms: dict[int, _Vmm] = {}
        self._threads: dict[int, tuple[int, int | None]] = {}  # tid -> (tgid, vcpu from cgroup)
        self._plain: set[int] = set()  # live pids that are not VMMs (this run only)
        self._generation = 0  # refresh() count
        self._seen: dict[int, int] = {}  # tid -> the refresh that last listed it
        self._status: dict[int, str | None] = {}  # proc/TID/status read since the last refresh
        # VMMs seen alive before the last refresh() and gone (or reused) in it: a fatal-mode kill
        # whose kernel line was already spent by pr_warn_once shows only as this (issue 16).
        self.exited: list[tuple[int, vmm.VmmIdentity]] = []
        if cache:
            self._load(cache)

    # -- cache --------------------------------------------------------------------------------

    def _load(self, cache: dict[str, Any]) -> None:
        if cache.get("version") != CACHE_VERSION:
            return
        if self._boot_id is not None and cache.get("boot_id") not in (None, self._boot_id):
            return
        vmms = cache.get("vmms")
        threads = cache.get("threads")
        if isinstance(vmms, dict):
            for key, entry in vmms.items():
                try:
                    pid = int(key)
                    identity = vmm.VmmIdentity(
                        vmm=str(entry["vmm"]),
                        name=str(entry["name"]),
                        uuid=None if entry.get("uuid") is None else str(entry["uuid"]),
                        manager=None if entry.get("manager") is None else str(entry["manager"]),
                    )
                    # Unconfirmed until the next refresh() finds the pid running the same argv.
                    state = _Vmm(identity, alive=False, dead_refreshes=int(entry.get("dead_refreshes", 0)))
                except (KeyError, TypeError, ValueError, AttributeError):
                    continue  # one bad entry costs that entry, not the cache
                self._vmms[pid] = state
        if isinstance(threads, dict):
            for key, entry in threads.items():
                try:
                    tid, tgid = int(key), int(entry[0])
                    vcpu = None if entry[1] is None else int(entry[1])
                except (IndexError, KeyError, TypeError, ValueError):
                    continue
                if tgid in self._vmms:
                    self._threads[tid] = (tgid, vcpu)
                    self._vmms[tgid].tids.add(tid)
                    self._seen[tid] = self._generation

    def cache_snapshot(self) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "boot_id": self._boot_id,
            "vmms": {
                str(pid): {
                    "vmm": v.identity.vmm,
                    "name": v.identity.name,
                    "uuid": v.identity.uuid,
                    "manager": v.identity.manager,
                    "alive": v.alive,
                    "dead_refreshes": v.dead_refreshes,
                }
                for pid, v in self._vmms.items()
            },
            "threads": {str(tid): [tgid, vcpu] for tid, (tgid, vcpu) in self._threads.items()},
        }

    # -- reads (each returns None when the file is gone or unreadable) ------------------------

    def _read(self, rel: str) -> str | None:
        try:
            return self._host.read_text(rel)
        except OSError:
            # ENOENT/ESRCH: the process exited mid-read, which is normal; EACCES: another user's
            # process under hidepid — either way there is nothing to learn from it now.
            return None

    def _identify(self, pid: int, args: tuple[str, ...]) -> vmm.VmmIdentity | None:
        if vmm.vmm_kind(args) is None:
            return None
        cgroup = vmm.parse_cgroup(self._read(f"proc/{pid}/cgroup") or "")
        return vmm.identify(pid, args, cgroup)

    def _thread_cgroup_vcpu(self, identity: vmm.VmmIdentity, tgid: int, tid: int) -> int | None:
        if identity.manager != "libvirt" or tid == tgid:
            return None  # only libvirt has vcpuN cgroups; the main thread is the emulator
        return vmm.vcpu_index("", "", vmm.parse_cgroup(self._read(f"proc/{tid}/cgroup") or ""))

    # -- refresh ------------------------------------------------------------------------------

    def refresh(self) -> None:
        self._generation += 1
        self._status.clear()
        self.exited = []
        try:
            live = {int(n) for n in self._host.listdir("proc") if n.isdigit()}
        except OSError:
            return  # no procfs under the root: resolve() will say (None, None)
        self._plain &= live
        for pid in sorted(live - self._plain):
            raw = self._read(f"proc/{pid}/cmdline")
            if raw is None:
                continue  # exited since the listdir
            args = vmm.parse_cmdline(raw)
            if not args:
                # A kernel thread, or a zombie (a VMM just killed by SIGBUS): keep what we knew.
                if pid not in self._vmms:
                    self._plain.add(pid)
                continue
            known = self._vmms.get(pid)
            if known is None and vmm.vmm_kind(args) is not None and not self._is_leader(pid):
                # A thread's /proc/TID shows its process's argv; a real kernel does not list
                # threads in proc, a fake host or a racing readdir may. Skip it like a plain pid.
                self._plain.add(pid)
                continue
            identity = self._identify(pid, args)
            if identity is None:
                self._plain.add(pid)
                if known is not None:
                    self._mark_dead(pid)  # the pid was reused by a plain process
                continue
            if known is not None and known.identity == identity:
                known.alive, known.dead_refreshes = True, 0
            else:
                self._forget_threads(pid)
                self._vmms[pid] = _Vmm(identity)
            self._refresh_threads(pid, identity)
        for pid, state in list(self._vmms.items()):
            if pid not in live:
                self._mark_dead(pid)
                state.dead_refreshes += 1
        self._prune()

    def _is_leader(self, pid: int) -> bool:
        status = self._read(f"proc/{pid}/status")
        try:
            return status is not None and procfs.parse_status_tgid(status) == pid
        except ParseError:
            return False

    def _mark_dead(self, pid: int) -> None:
        state = self._vmms[pid]
        if state.alive:
            self.exited.append((pid, state.identity))
        state.alive = False

    def _forget_threads(self, pid: int) -> None:
        state = self._vmms.get(pid)
        if state is None:
            return
        for tid in state.tids:
            self._drop_thread(pid, tid)
        state.tids.clear()

    def _drop_thread(self, pid: int, tid: int) -> None:
        cached = self._threads.get(tid)
        if cached is not None and cached[0] == pid:  # not a TID since taken by another VMM
            del self._threads[tid]
            self._seen.pop(tid, None)

    def _add_thread(self, pid: int, tid: int, identity: vmm.VmmIdentity) -> tuple[int, int | None]:
        cached = self._threads.get(tid)
        if cached is None or cached[0] != pid:
            cached = (pid, self._thread_cgroup_vcpu(identity, pid, tid))
            self._threads[tid] = cached
        self._vmms[pid].tids.add(tid)
        self._seen[tid] = self._generation
        return cached

    def _refresh_threads(self, pid: int, identity: vmm.VmmIdentity) -> None:
        try:
            tids = [int(n) for n in self._host.listdir(f"proc/{pid}/task") if n.isdigit()]
        except OSError:
            return
        for tid in tids:
            self._add_thread(pid, tid, identity)
        # QEMU's worker threads come and go all day: forget a thread of a running VMM once two
        # refreshes in a row did not list it (one pass of grace for a trap read after its exit).
        # A dead VMM keeps all its threads until the VMM itself is pruned.
        state = self._vmms[pid]
        gone = [t for t in state.tids if self._seen.get(t, self._generation) < self._generation - 1]
        for tid in gone:
            self._drop_thread(pid, tid)
            state.tids.discard(tid)

    def _prune(self) -> None:
        dead = [(v.dead_refreshes, pid) for pid, v in self._vmms.items() if not v.alive]
        dead.sort()
        expired = {pid for n, pid in dead if n > DEAD_REFRESHES_KEPT}
        expired |= {pid for _, pid in dead[DEAD_VMMS_KEPT:]}  # the longest dead beyond the cap
        for pid in expired:
            self._forget_threads(pid)
            del self._vmms[pid]

    # -- resolve ------------------------------------------------------------------------------

    def resolve(self, tid: int, comm: str) -> tuple[int | None, Guest | None]:
        """(tgid, guest) of thread `tid` named `comm` in the trap. Guest None: a plain host process."""
        live = self._resolve_live(tid, comm)
        if live is not None:
            return live
        return self._resolve_cached(tid, comm)

    def _guest(self, identity: vmm.VmmIdentity, comm: str, cgroup_vcpu: int | None) -> Guest:
        vcpu = vmm.vcpu_index(identity.vmm, comm)
        return Guest(
            name=identity.name,
            uuid=identity.uuid,
            vmm=identity.vmm,
            vcpu=vcpu if vcpu is not None else cgroup_vcpu,
        )

    def _resolve_live(self, tid: int, comm: str) -> tuple[int | None, Guest | None] | None:
        # One read per thread per pass, however many of its traps the pass resolves.
        if tid not in self._status:
            self._status[tid] = self._read(f"proc/{tid}/status")
        status = self._status[tid]
        if status is None:
            return None
        try:
            tgid = procfs.parse_status_tgid(status)
        except ParseError:
            return None
        name = procfs.parse_status_name(status)
        if comm and comm != _UNKNOWN_COMM and name is not None and name != comm[:15] and tid in self._threads:
            # The TID of a VMM thread we knew now carries another name: that thread is gone and
            # the TID reused. (Without a cached thread the live answer stands: kmsg and status
            # escape unusual bytes differently, so names alone do not prove a reuse.)
            return None
        known = self._vmms.get(tgid)
        identity: vmm.VmmIdentity | None = None
        if known is not None and known.alive:
            identity = known.identity
        elif tgid not in self._plain:
            args = vmm.parse_cmdline(self._read(f"proc/{tgid}/cmdline") or "")
            if args:
                identity = self._identify(tgid, args)
                if identity is not None:
                    if known is None or known.identity != identity:
                        self._forget_threads(tgid)
                    self._vmms[tgid] = _Vmm(identity)
                else:
                    self._plain.add(tgid)
            elif known is not None:
                identity = known.identity  # a zombie VMM (killed, not yet reaped): what we knew
        if identity is None:
            return tgid, None
        cached = self._add_thread(tgid, tid, identity)
        return tgid, self._guest(identity, comm or name or "", cached[1])

    def _resolve_cached(self, tid: int, comm: str) -> tuple[int | None, Guest | None]:
        cached = self._threads.get(tid)
        if cached is None and tid in self._vmms:
            cached = (tid, None)  # the VMM's main thread
        if cached is None:
            return None, None
        tgid, cgroup_vcpu = cached
        state = self._vmms.get(tgid)
        if state is None:
            return None, None
        return tgid, self._guest(state.identity, comm, cgroup_vcpu)
