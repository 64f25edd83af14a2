"""GuestResolver on fake hosts laid out as each VMM does it, including guests killed before we look."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agent.fakehost import FakeHost, VmmKind
from agent.host import HostRoot
from agent.payload import Guest
from agent.sources import guests
from agent.sources.guests import GuestResolver

UUID = "8e2c5d1a-3f4b-4c6d-9e8f-0a1b2c3d4e5f"


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path).kernel("6.8.0").mode("fatal").cpus(2)


def _resolver(
    host: FakeHost, cache: dict[str, Any] | None = None, boot_id: str | None = None
) -> GuestResolver:
    return GuestResolver(HostRoot.at(host.root), cache, boot_id=boot_id)


KINDS: list[tuple[VmmKind, str, str | None, bool]] = [
    # (kind, vmm field, uuid expected, vcpu index known from the thread name or cgroup)
    ("qemu", "qemu", UUID, True),
    ("libvirt", "qemu", UUID, True),
    ("proxmox", "qemu", UUID, True),
    ("kata", "qemu", None, False),  # uuid is Kata's own, checked below
    ("firecracker", "firecracker", None, True),
    ("cloud-hypervisor", "cloud-hypervisor", None, True),
    ("crosvm", "crosvm", None, True),
]


@pytest.mark.parametrize(("kind", "vmm", "uuid", "vcpu_known"), KINDS, ids=[k[0] for k in KINDS])
def test_a_vcpu_thread_of_each_vmm_is_attributed_to_its_guest(
    host: FakeHost, kind: VmmKind, vmm: str, uuid: str | None, vcpu_known: bool
) -> None:
    vm = host.vmm(kind, "web-1", pid=4242, vcpus=4, uuid=UUID if kind != "kata" else None)
    resolver = _resolver(host)
    resolver.refresh()
    tgid, guest = resolver.resolve(vm.vcpu_tids[3], vm.vcpu_comm(3))
    assert tgid == 4242
    assert guest is not None
    assert (guest.name, guest.vmm, guest.vcpu) == ("web-1", vmm, 3 if vcpu_known else None)
    assert guest.uuid == (vm.uuid if kind == "kata" else uuid)


def test_qemu_without_debug_threads_still_finds_the_guest_without_a_vcpu(host: FakeHost) -> None:
    vm = host.qemu("batch-7", pid=5000, libvirt=False, debug_threads=False)
    resolver = _resolver(host)
    resolver.refresh()
    assert vm.vcpu_comm(1) == "qemu-system-x86"
    assert resolver.resolve(vm.vcpu_tids[1], "qemu-system-x86") == (
        5000,
        Guest(name="batch-7", uuid=None, vmm="qemu", vcpu=None),
    )


def test_libvirt_vcpu_cgroup_gives_the_index_when_the_thread_name_does_not(host: FakeHost) -> None:
    vm = host.qemu("web-2", pid=5100, vcpus=3, libvirt=True, debug_threads=False)
    resolver = _resolver(host)
    resolver.refresh()
    _, guest = resolver.resolve(vm.vcpu_tids[2], "qemu-system-x86")
    assert guest is not None and guest.vcpu == 2


def test_a_plain_host_process_has_no_guest(host: FakeHost) -> None:
    host.process("CJobMgr::m_Work", 700, threads=[(701, "CJobMgr::m_Work")])
    resolver = _resolver(host)
    resolver.refresh()
    assert resolver.resolve(701, "CJobMgr::m_Work") == (700, None)


def test_a_guest_started_after_the_last_refresh_is_resolved_live(host: FakeHost) -> None:
    resolver = _resolver(host)
    resolver.refresh()
    vm = host.qemu("late", pid=6000)
    _, guest = resolver.resolve(vm.vcpu_tids[0], vm.vcpu_comm(0))
    assert guest is not None and (guest.name, guest.vcpu) == ("late", 0)


def test_a_guest_killed_by_its_sigbus_is_still_attributed_from_the_cache(host: FakeHost) -> None:
    vm = host.qemu("doomed", pid=4242, uuid=UUID)
    resolver = _resolver(host)
    resolver.refresh()
    host.kill(4242)
    resolver.refresh()  # the agent's next pass: the process is gone
    assert not (host.root / f"proc/{vm.vcpu_tids[1]}").exists()
    assert resolver.resolve(vm.vcpu_tids[1], "CPU 1/KVM") == (
        4242,
        Guest(name="doomed", uuid=UUID, vmm="qemu", vcpu=1),
    )


def test_an_unknown_thread_that_is_gone_resolves_to_nothing(host: FakeHost) -> None:
    vm = host.qemu("never-seen", pid=4242)
    host.kill(4242)
    resolver = _resolver(host)
    resolver.refresh()
    assert resolver.resolve(vm.vcpu_tids[0], "CPU 0/KVM") == (None, None)


def test_a_zombie_vmm_whose_cmdline_is_empty_is_still_attributed(host: FakeHost) -> None:
    vm = host.qemu("zombie", pid=4242)
    resolver = _resolver(host)
    resolver.refresh()
    (host.root / "proc/4242/cmdline").write_text("")  # killed, not yet reaped
    resolver.refresh()
    _, guest = resolver.resolve(vm.vcpu_tids[0], "CPU 0/KVM")
    assert guest is not None and guest.name == "zombie"


def test_a_reused_tid_of_another_name_falls_back_to_the_cache(host: FakeHost) -> None:
    vm = host.qemu("doomed", pid=4242)
    resolver = _resolver(host)
    resolver.refresh()
    host.kill(4242)
    reused = vm.vcpu_tids[0]
    host.process("bash", reused)  # the TID now belongs to a shell
    tgid, guest = resolver.resolve(reused, "CPU 0/KVM")
    assert tgid == 4242
    assert guest is not None and guest.name == "doomed"
    assert resolver.resolve(reused, "bash") == (reused, None)


def test_a_live_thread_whose_name_is_spelled_differently_in_the_trap_is_still_resolved(
    host: FakeHost,
) -> None:
    # /dev/kmsg prints unusual COMM bytes as \xNN; proc/TID/status does not: no cache, live wins.
    host.process("caf\u00e9", 910)
    resolver = _resolver(host)
    assert resolver.resolve(910, "caf\\xc3\\xa9") == (910, None)
    vm = host.qemu("web-9", pid=920)
    _, guest = resolver.resolve(vm.vcpu_tids[0], "CPU 0/KVM\\x00")
    assert guest is not None and guest.name == "web-9"


def test_the_cache_survives_a_restart_as_json(host: FakeHost) -> None:
    vm = host.vmm("firecracker", "fc-9", pid=4242)
    first = _resolver(host, boot_id=host.boot_id)
    first.refresh()
    snapshot = json.loads(json.dumps(first.cache_snapshot()))
    host.kill(4242)
    second = _resolver(host, snapshot, boot_id=host.boot_id)
    second.refresh()
    assert second.resolve(vm.vcpu_tids[1], "fc_vcpu 1") == (
        4242,
        Guest(name="fc-9", uuid=None, vmm="firecracker", vcpu=1),
    )


def test_a_cache_from_another_boot_is_dropped(host: FakeHost) -> None:
    vm = host.qemu("old-boot", pid=4242)
    first = _resolver(host, boot_id="11111111-1111-4111-8111-111111111111")
    first.refresh()
    snapshot = first.cache_snapshot()
    host.kill(4242)
    second = _resolver(host, snapshot, boot_id=host.boot_id)
    assert second.resolve(vm.vcpu_tids[0], "CPU 0/KVM") == (None, None)


@pytest.mark.parametrize(
    "cache",
    [
        {},
        {"version": 99, "vmms": {"1": {}}},
        {"version": 1, "vmms": "nope", "threads": []},
        {
            "version": 1,
            "vmms": {"x": {"vmm": "qemu", "name": "a"}, "5": {"name": "no vmm"}},
            "threads": {"6": [5]},
        },
        {"version": 1, "vmms": {"5": None}, "threads": {"6": None, "y": [1, 2]}},
    ],
)
def test_a_damaged_cache_is_ignored_entry_by_entry_without_raising(
    host: FakeHost, cache: dict[str, Any]
) -> None:
    resolver = _resolver(host, cache)
    resolver.refresh()
    assert resolver.resolve(6, "CPU 0/KVM") == (None, None)
    assert resolver.cache_snapshot()["vmms"] == {}


def test_dead_guests_are_forgotten_after_an_hour_of_refreshes(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guests, "DEAD_REFRESHES_KEPT", 3)
    vm = host.qemu("gone", pid=4242)
    resolver = _resolver(host)
    resolver.refresh()
    host.kill(4242)
    for _ in range(3):
        resolver.refresh()
    assert resolver.resolve(vm.vcpu_tids[0], "CPU 0/KVM")[0] == 4242
    resolver.refresh()
    assert resolver.resolve(vm.vcpu_tids[0], "CPU 0/KVM") == (None, None)
    assert resolver.cache_snapshot()["threads"] == {}


def test_at_most_the_newest_dead_guests_are_kept(host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guests, "DEAD_VMMS_KEPT", 2)
    resolver = _resolver(host)
    for n in range(4):
        host.vmm("firecracker", f"fc-{n}", pid=1000 + 10 * n, vcpus=1)
        resolver.refresh()
        host.kill(1000 + 10 * n)
        resolver.refresh()
    names = sorted(v["name"] for v in resolver.cache_snapshot()["vmms"].values())
    assert names == ["fc-2", "fc-3"]


def test_an_exited_thread_of_a_running_vmm_is_kept_one_pass_then_forgotten(host: FakeHost) -> None:
    vm = host.qemu("busy", pid=4242, vcpus=1)
    worker = 4290
    host.process("worker", worker)  # lay out its files, then make it a thread of the VMM
    (host.root / f"proc/{worker}/status").write_text(f"Name:\tworker\nTgid:\t4242\nPid:\t{worker}\n")
    (host.root / f"proc/4242/task/{worker}").mkdir()
    resolver = _resolver(host)
    resolver.refresh()
    shutil.rmtree(host.root / f"proc/{worker}")
    shutil.rmtree(host.root / f"proc/4242/task/{worker}")
    resolver.refresh()  # the trap of the exited worker is read in this pass: still attributed
    _, guest = resolver.resolve(worker, "worker")
    assert guest is not None and guest.name == "busy"
    resolver.refresh()
    assert resolver.resolve(worker, "worker") == (None, None)
    assert str(worker) not in resolver.cache_snapshot()["threads"]
    assert resolver.resolve(vm.vcpu_tids[0], "CPU 0/KVM")[1] is not None


def test_a_process_vanishing_mid_read_is_normal(host: FakeHost) -> None:
    vm = host.qemu("flaky", pid=4242)
    (host.root / "proc/4242/cmdline").unlink()
    (host.root / "proc/4242/cgroup").unlink()
    resolver = _resolver(host)
    resolver.refresh()
    assert resolver.resolve(vm.vcpu_tids[0], "CPU 0/KVM") == (4242, None)


class _CountingHost(HostRoot):
    reads: ClassVar[Counter[str]] = Counter()

    def read_text(self, rel: str) -> str:
        _CountingHost.reads[rel] += 1
        return super().read_text(rel)


def test_a_refresh_reads_each_proc_file_at_most_once_and_skips_known_plain_processes(host: FakeHost) -> None:
    host.qemu("web-1", pid=4242, vcpus=4)
    host.vmm("firecracker", "fc-1", pid=5000)
    for pid in range(100, 140):
        host.process(f"daemon{pid}", pid)
    resolver = GuestResolver(_CountingHost(host.root))
    resolver.refresh()
    assert max(_CountingHost.reads.values()) == 1
    _CountingHost.reads.clear()
    resolver.refresh()
    assert max(_CountingHost.reads.values()) == 1
    assert not any(rel.startswith("proc/1") and not rel.startswith("proc/1/") for rel in _CountingHost.reads)
    assert set(_CountingHost.reads) == {
        "proc/4242/cmdline",
        "proc/4242/cgroup",
        "proc/5000/cmdline",
        "proc/5000/cgroup",
    }


def test_resolving_many_traps_of_one_thread_reads_its_status_once_per_pass(host: FakeHost) -> None:
    vm = host.qemu("chatty", pid=4242)
    resolver = GuestResolver(_CountingHost(host.root))
    resolver.refresh()
    _CountingHost.reads.clear()
    for _ in range(50):
        resolver.resolve(vm.vcpu_tids[0], "CPU 0/KVM")
    assert _CountingHost.reads == Counter({f"proc/{vm.vcpu_tids[0]}/status": 1})
    resolver.refresh()
    _CountingHost.reads.clear()
    resolver.resolve(vm.vcpu_tids[0], "CPU 0/KVM")
    assert _CountingHost.reads == Counter({f"proc/{vm.vcpu_tids[0]}/status": 1})


def test_this_machines_real_proc_is_scanned_and_our_own_process_has_no_guest() -> None:
    resolver = GuestResolver(HostRoot.at("/"))
    resolver.refresh()
    me = os.getpid()
    comm = Path(f"/proc/{me}/comm").read_text().strip()
    assert resolver.resolve(me, comm) == (me, None)
    json.dumps(resolver.cache_snapshot())
