"""The msr source on fake hosts, as nobody, and on this machine's real root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from agent.fakehost import FakeHost
from agent.host import HostRoot
from agent.sources.msr import collect

NOBODY = 65534


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path).kernel("6.8.0").mode("warn").cpus(4)


def test_every_cpu_in_warn_mode_reads_split_lock_detection_on_and_bus_lock_off_as_the_kernel_leaves_it(
    host: FakeHost,
) -> None:
    result = collect(HostRoot.at(host.root))
    assert result.status == "ok"
    assert result.error is None
    assert result.sld_supported is True
    assert [c.cpu for c in result.cpus] == [0, 1, 2, 3]
    # The kernel clears DEBUGCTL bit 2 on CPUs with split-lock detection in warn mode: #AC does the job.
    assert all(
        c.test_ctrl == 1 << 29 and c.sld_on and c.bld_on is False and c.error is None for c in result.cpus
    )


def test_ratelimit_mode_reads_split_lock_off_and_bus_lock_on(tmp_path: Path) -> None:
    host = FakeHost(tmp_path).kernel("6.8.0").mode("ratelimit:10").cpus(2)
    result = collect(HostRoot.at(host.root))
    assert [(c.sld_on, c.bld_on) for c in result.cpus] == [(False, True), (False, True)]


def test_one_core_that_reads_off_is_reported_as_off_and_the_others_on(host: FakeHost) -> None:
    host.cpu_state(2, sld_on=False)
    result = collect(HostRoot.at(host.root))
    assert [c.sld_on for c in result.cpus] == [True, True, False, True]
    assert result.cpus[2].test_ctrl == 0


def test_cpu_whose_msr_read_fails_with_eio_is_reported_and_others_still_read(host: FakeHost) -> None:
    host.msr_error(3, "eio")
    result = collect(HostRoot.at(host.root))
    assert result.status == "ok"
    assert [c.error for c in result.cpus[:3]] == [None, None, None]
    broken = result.cpus[3]
    assert broken.error is not None
    assert "not readable on cpu 3 (EIO)" in broken.error
    assert "not supported by this CPU or running in a guest" in broken.error
    assert (broken.test_ctrl, broken.sld_on, broken.bld_on) == (None, None, None)


def test_cpu_without_an_msr_file_says_to_load_the_msr_module(host: FakeHost) -> None:
    host.msr_error(1, "missing")
    result = collect(HostRoot.at(host.root))
    assert result.status == "ok"
    assert result.cpus[1].error == "cpu 1: no dev/cpu/1/msr: msr module not loaded: modprobe msr"
    assert result.cpus[2].sld_on is True


def test_no_dev_cpu_is_absent_with_the_remedy_and_no_cpus(host: FakeHost) -> None:
    host.no_msr_device()
    result = collect(HostRoot.at(host.root))
    assert result.status == "absent"
    assert result.error is not None and "modprobe msr" in result.error
    assert result.cpus == ()
    assert result.sld_supported is None


def test_cpuid_directories_without_msr_files_are_absent(host: FakeHost) -> None:
    # What this machine has: dev/cpu/N/cpuid from the cpuid module, no msr module.
    for n in range(4):
        host.msr_error(n, "missing")
        (host.root / f"dev/cpu/{n}/cpuid").write_bytes(b"")
    result = collect(HostRoot.at(host.root))
    assert (result.status, result.cpus) == ("absent", ())
    assert result.error == "no dev/cpu/*/msr: msr module not loaded: modprobe msr"


def test_every_cpu_failing_makes_the_source_failed_naming_the_first_cpu(host: FakeHost) -> None:
    for n in range(4):
        host.msr_error(n, "eio")
    result = collect(HostRoot.at(host.root))
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("MSR 0x1d9 not readable on cpu 0 (EIO)")
    assert result.error.endswith("(and 3 more CPUs)")
    assert len(result.cpus) == 4


def test_test_ctrl_is_not_read_where_core_caps_says_unsupported(tmp_path: Path) -> None:
    host = FakeHost(tmp_path).kernel("6.8.0").cpus(2, sld_supported=False)
    host.cpu_state(0, sld_on=True)  # bit 29 set in the file: proof that nobody read it
    result = collect(HostRoot.at(host.root))
    assert result.sld_supported is False
    assert [(c.test_ctrl, c.sld_on, c.error) for c in result.cpus] == [(None, None, None)] * 2


def test_cpuinfo_flag_makes_test_ctrl_read_on_cpus_the_kernel_knows_by_model(tmp_path: Path) -> None:
    # Ice Lake: split-lock detection without the CORE_CAPS bit; the kernel sets the cpuinfo flag.
    host = FakeHost(tmp_path).kernel("6.8.0").cpus(2, sld_supported=False)
    host.cpu_state(0, sld_on=True).cpu_state(1, sld_on=True)
    result = collect(HostRoot.at(host.root), sld_flag=True)
    assert result.sld_supported is True
    assert [c.sld_on for c in result.cpus] == [True, True]


def test_odd_entries_in_dev_cpu_are_ignored(host: FakeHost) -> None:
    (host.root / "dev/cpu/microcode").mkdir()
    (host.root / "dev/cpu/cpu7").write_text("")
    (host.root / "dev/cpu/README").write_text("not a cpu")
    result = collect(HostRoot.at(host.root))
    assert [c.cpu for c in result.cpus] == [0, 1, 2, 3]
    assert result.status == "ok"


def test_an_msr_path_that_is_a_directory_or_a_fifo_fails_that_cpu_without_hanging(host: FakeHost) -> None:
    (host.root / "dev/cpu/1/msr").unlink()
    (host.root / "dev/cpu/1/msr").mkdir()
    (host.root / "dev/cpu/2/msr").unlink()
    os.mkfifo(host.root / "dev/cpu/2/msr")
    result = collect(HostRoot.at(host.root))
    assert result.status == "ok"
    assert [c.error is None for c in result.cpus] == [True, False, False, True]
    assert result.cpus[1].error is not None and result.cpus[1].error.startswith(
        "cpu 1: cannot read dev/cpu/1/msr (EISDIR"
    )
    assert result.cpus[2].error is not None and result.cpus[2].error.startswith(
        "cpu 2: cannot read dev/cpu/2/msr (ESPIPE"
    )


def test_cpus_are_listed_in_numeric_order(tmp_path: Path) -> None:
    host = FakeHost(tmp_path).kernel("6.8.0").cpus(12)
    assert [c.cpu for c in collect(HostRoot.at(host.root)).cpus] == list(range(12))


def test_dev_cpu_that_is_a_file_is_absent_not_a_crash(tmp_path: Path) -> None:
    host = FakeHost(tmp_path).no_msr_device()
    (host.root / "dev/cpu").write_text("")
    result = collect(HostRoot.at(host.root))
    assert result.status == "absent"


def test_this_machines_real_root_is_read_cleanly() -> None:
    # Here: an AMD guest with cpuid but no msr module. Wherever it runs: never raises.
    result = collect(HostRoot.at("/"))
    assert result.status in ("ok", "absent", "denied", "failed")
    if not Path("/dev/cpu/0/msr").exists():
        assert result.status == "absent"
        assert result.error is not None and "modprobe msr" in result.error


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A fake host nobody can walk into (tmp_path's parents are 0700) with root-only msr files."""
    root = Path(tempfile.mkdtemp(prefix="splitwatch-msr-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _collect_as_nobody(root: Path) -> dict[str, object]:
    code = (
        "import json, sys\n"
        "from dataclasses import asdict\n"
        "from agent.host import HostRoot\n"
        "from agent.sources.msr import collect\n"
        "print(json.dumps(asdict(collect(HostRoot.at(sys.argv[1])))))\n"
    )

    repo = Path(__file__).resolve().parents[3]
    argv = [sys.executable, "-c", code, str(root)]
    setpriv = shutil.which("setpriv")

    def drop() -> None:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)

    # setpriv execs the interpreter before its credentials bite (it may live under a 0700 /root);
    # without setpriv, drop in the child (works where the interpreter is world-readable).
    done = subprocess.run(
        [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv] if setpriv else argv,
        preexec_fn=None if setpriv else drop,
        capture_output=True,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_unprivileged_agent_is_denied_per_cpu_with_the_capability_to_grant(shared_root: Path) -> None:
    host = FakeHost(shared_root).kernel("6.8.0").cpus(2)
    for path in (host.root / "dev").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o600)
    for path in (host.root, *host.root.rglob("*")):
        if path.is_dir():
            path.chmod(0o755)
    if os.geteuid() == 0:
        result = _collect_as_nobody(host.root)
    else:
        for n in range(2):
            (host.root / f"dev/cpu/{n}/msr").chmod(0)
        result = asdict(collect(HostRoot.at(host.root)))
    assert result["status"] == "denied"
    assert result["error"] == (
        "cpu 0: cannot read dev/cpu/0/msr (permission denied): run as root or grant CAP_SYS_RAWIO"
        " (and 1 more CPUs)"
    )
    cpus = result["cpus"]
    assert isinstance(cpus, list)
    assert [c["error"] for c in cpus] == [
        f"cpu {n}: cannot read dev/cpu/{n}/msr (permission denied): run as root or grant CAP_SYS_RAWIO"
        for n in range(2)
    ]
