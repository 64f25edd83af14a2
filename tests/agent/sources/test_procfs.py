"""The procfs source: every host fact from under the root, never from the machine running the tests."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.fakehost import FakeHost
from agent.host import HostRoot
from agent.kernel.modes import UNKNOWN_KERNEL
from agent.payload import Mode
from agent.sources.procfs import collect


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path, hostname="kvm-host-17").kernel("6.8.0-49-generic").mode("fatal").cpus(8)


def test_a_fake_host_is_described_from_its_files(host: FakeHost) -> None:
    result = collect(HostRoot.at(host.root))
    assert result.hostname == "kvm-host-17"
    assert result.hostname != socket.gethostname()
    assert result.kernel == "6.8.0-49-generic"
    assert result.kernel_version == (6, 8)
    assert result.boot_id == host.boot_id
    assert result.btime == host.btime
    assert (result.mode, result.ratelimit, result.mitigate) == (Mode.FATAL, None, 1)
    assert result.cpu_model == "Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz"
    assert result.cpu_count == 8
    assert (result.sld_flag, result.bld_flag) == (True, True)
    assert result.hypervisor_modules == ("kvm_intel",)
    assert result.errors == ()


def test_ratelimit_mode_carries_its_rate(host: FakeHost) -> None:
    host.mode("ratelimit:25")
    result = collect(HostRoot.at(host.root))
    assert (result.mode, result.ratelimit) == (Mode.RATELIMIT, 25)


def test_ratelimit_on_a_5_10_kernel_is_warn_as_that_kernel_reads_it(host: FakeHost) -> None:
    host.kernel("5.10.0").mode("ratelimit:25")
    result = collect(HostRoot.at(host.root))
    assert (result.mode, result.ratelimit) == (Mode.WARN, None)


def test_absent_split_lock_mitigate_is_none_without_an_error(host: FakeHost) -> None:
    host.kernel("5.15.0").mitigate(None)
    result = collect(HostRoot.at(host.root))
    assert result.mitigate is None
    assert result.errors == ()


def test_mitigate_0_is_read(host: FakeHost) -> None:
    host.mitigate(0)
    assert collect(HostRoot.at(host.root)).mitigate == 0


def test_cpu_without_detection_flags_reads_false(tmp_path: Path) -> None:
    host = FakeHost(tmp_path).cpus(
        2, sld_supported=False, bld_supported=False, model="Intel(R) Xeon(R) E5-2680"
    )
    result = collect(HostRoot.at(host.root))
    assert (result.sld_flag, result.bld_flag, result.cpu_model) == (False, False, "Intel(R) Xeon(R) E5-2680")


def test_hypervisor_modules_list_vmware_and_virtualbox(host: FakeHost) -> None:
    host.modules("vmmon", "vmnet", "vboxdrv", "ext4")
    assert collect(HostRoot.at(host.root)).hypervisor_modules == ("vmmon", "vboxdrv")


def test_empty_root_gives_defaults_and_one_error_per_missing_file(tmp_path: Path) -> None:
    result = collect(HostRoot.at(tmp_path))
    assert (result.hostname, result.kernel, result.boot_id, result.btime) == (
        "unknown",
        "unknown",
        None,
        None,
    )
    assert result.kernel_version == UNKNOWN_KERNEL
    assert (result.mode, result.mitigate, result.cpu_count) == (Mode.WARN, None, 0)
    assert result.hypervisor_modules == ()
    missing = {e.split(" (")[0] for e in result.errors}
    assert missing == {
        "cannot read proc/sys/kernel/hostname",
        "cannot read proc/sys/kernel/osrelease",
        "cannot read proc/sys/kernel/random/boot_id",
        "cannot read proc/stat",
        "cannot read proc/cmdline",
        "cannot read proc/cpuinfo",
    }
    assert all("(missing)" in e and "--root" in e for e in result.errors)


def test_garbled_files_give_defaults_and_say_which_file(host: FakeHost) -> None:
    (host.root / "proc/stat").write_text("cpu 1 2 3\n")
    (host.root / "proc/sys/kernel/random/boot_id").write_text("nope\n")
    (host.root / "proc/sys/kernel/split_lock_mitigate").write_text("7\n")
    (host.root / "proc/cpuinfo").write_text("\0\0\0")
    (host.root / "proc/sys/kernel/osrelease").write_text("linux\n")
    result = collect(HostRoot.at(host.root))
    assert (result.btime, result.boot_id, result.mitigate, result.cpu_count) == (None, None, None, 0)
    assert result.kernel_version == UNKNOWN_KERNEL
    assert sorted(e.split(":")[0] for e in result.errors) == [
        "cannot parse proc/cpuinfo",
        "cannot parse proc/stat",
        "cannot parse proc/sys/kernel/osrelease",
        "cannot parse proc/sys/kernel/random/boot_id",
        "cannot parse proc/sys/kernel/split_lock_mitigate",
    ]


def test_missing_proc_modules_is_a_kernel_without_modules_not_an_error(host: FakeHost) -> None:
    (host.root / "proc/modules").unlink()
    result = collect(HostRoot.at(host.root))
    assert (result.hypervisor_modules, result.errors) == ((), ())


def test_init_arguments_after_double_dash_are_still_seen_by_the_x86_early_parse(host: FakeHost) -> None:
    (host.root / "proc/cmdline").write_text("ro quiet -- --init-flag split_lock_detect=off\n")
    assert collect(HostRoot.at(host.root)).mode is Mode.OFF


def test_this_machines_real_root_is_read_without_crashing() -> None:
    result = collect(HostRoot.at("/"))
    assert result.kernel == Path("/proc/sys/kernel/osrelease").read_text().strip()
    assert result.btime > 0
    assert result.cpu_count >= 1
