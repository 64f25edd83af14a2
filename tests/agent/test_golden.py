"""`splitwatch agent --root R --once --stdout` on fake hosts, compared with tests/golden/<scenario>.jsonl.

Each scenario arranges a fake host (agent/fakehost.py), may run the agent once first (with a
state directory, so the guest cache and cursor carry over, as on a real host), then runs it once
more; that last output, with `observed_at` normalised, must equal the golden file line for line.
`pytest tests/agent --update-golden` (or SPLITWATCH_UPDATE_GOLDEN=1) rewrites the files instead;
review them by eye: the actions, guests and counts must be what docs/kernel.md says.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.fakehost import FakeHost
from app.cli.main import cli

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
OBSERVED_AT = re.compile(r'"observed_at":"[^"]*"')

# docs/api.md, ingest payload schema 1: the exact key sets.
PAYLOAD_KEYS = {"schema", "host", "state", "events", "gaps"}
HOST_KEYS = {"name", "boot_id", "kernel", "cpu_model", "agent_version"}
STATE_KEYS = {"observed_at", "mode", "ratelimit", "mitigate", "sld_supported", "bld_supported", "cpus"}
# Optional additions (docs/api.md): the consistency verdict, and how a sigbus kill was known (#16).
CONSISTENCY_KEYS = {"verdict", "reason", "details"}
VERDICTS = {
    "consistent", "unsupported", "off_by_design", "transient", "per_task_off", "stuck_off", "drift",
    "inconsistent_config", "foreign_hypervisor",
}  # fmt: skip
EVIDENCE = {"kernel_line", "tracefs", "vmm_exit"}
CPU_KEYS = {"cpu", "test_ctrl", "sld_on", "bld_on", "error"}
EVENT_KEYS = {"source", "seq", "time", "kind", "comm", "tid", "tgid", "address", "count", "action", "guest"}
GUEST_KEYS = {"name", "uuid", "vmm", "vcpu"}
GAP_KEYS = {"source", "first_seq", "last_seq", "count", "reason"}
ACTIONS = {"warn", "throttle", "sigbus", "ratelimit", "reflect", "oops", "unknown"}

Once = Callable[[], str]


def run_once(root: Path, state_dir: Path) -> str:
    result = CliRunner().invoke(
        cli, ["agent", "--root", str(root), "--once", "--stdout", "--state-dir", str(state_dir)]
    )
    assert result.exit_code == 0, result.output
    return result.stdout


# -- scenarios: arrange the host; the harness runs the agent once more at the end ----------------


def warn_host_with_libvirt_guests(host: FakeHost, once: Once) -> None:
    host.kernel("6.8.0-49-generic").mode(None).mitigate(1).cpus(4).boot_messages()
    web = host.qemu("web-1", pid=4242, vcpus=2, uuid="9d8f5c1e-52a7-4c3e-8f0e-1d2b3c4d5e6f")
    db = host.qemu("db-1", pid=5100, vcpus=2, uuid="1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9")
    host.split_lock(web.vcpu_comm(0), web.vcpu_tids[0], "0xffffffff8104f2a1")
    host.split_lock(web.vcpu_comm(1), web.vcpu_tids[1], "0x7f3a12c0")
    host.split_lock(db.vcpu_comm(1), db.vcpu_tids[1], "0x401136")


def fatal_host_that_killed_a_guest(host: FakeHost, once: Once) -> None:
    host.kernel("6.8.0-49-generic").mode("fatal").cpus(4).boot_messages()
    doomed = host.qemu("ci-build-07", pid=3300, vcpus=2, uuid="0c4d8e3a-77b1-4c2f-9a6e-5f1b2c3d4e5f")
    host.qemu("web-2", pid=3400, vcpus=2)
    host.process("myapp", 6100)
    once()  # the agent saw the guest alive: it is in the guest cache
    host.split_lock(doomed.vcpu_comm(1), doomed.vcpu_tids[1], "0x7f3a12c0", verb="fatal")
    host.kill(doomed.pid)  # QEMU died of the vCPU's SIGBUS before the agent looked
    host.alignment_trap("myapp", 6100, "401136")
    host.kill(6100)


def ratelimit_host_with_bus_locks(host: FakeHost, once: Once) -> None:
    host.kernel("6.1.0-26-amd64").mode("ratelimit:10").mitigate(1).cpus(4).boot_messages()
    host.process("dpdk-pmd", 7000, threads=[(7001, "lcore-worker-1")])
    for _ in range(3):
        host.bus_lock("lcore-worker-1", 7001, "0x55d0c2a41f08")
    host.suppressed(27, "handle_bus_lock")
    host.bus_lock("dpdk-pmd", 7000, "0x55d0c2a41f10")


def kernel_5_10_without_mitigate(host: FakeHost, once: Once) -> None:
    host.kernel("5.10.0-28-amd64").mode(None).mitigate(None).cpus(2, bld_supported=False).boot_messages()
    vm = host.qemu("win2012-app", pid=2800, vcpus=2, uuid="5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d")
    host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0], "0x77a1c2d4")
    host.split_lock("java", 9999, "0x7f00dead")  # a thread already gone


def drifting_cores(host: FakeHost, once: Once) -> None:
    host.kernel("6.5.0-35-generic").mode("warn").mitigate(1).cpus(8).boot_messages()
    for cpu in (4, 5, 6):
        host.cpu_state(cpu, sld_on=False)
    once()
    once()  # the harness's pass is the third sample in a row with cpu 4-6 off: drift


def overrun_suppressed_and_forged(host: FakeHost, once: Once) -> None:
    host.kernel("6.8.0-49-generic").mode("warn").mitigate(0).cpus(2).boot_messages()
    vm = host.qemu("erp-legacy-01", pid=4000, vcpus=2)
    once()  # cursor after the boot lines
    host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0], "0x4011a0")
    host.overrun(120)  # 120 records overwritten before the agent read them
    host.split_lock(vm.vcpu_comm(1), vm.vcpu_tids[1], "0x4011a8")
    host.suppressed(42)
    host.forged("x86/split lock detection: #AC: CPU 0/KVM/4001 took a split_lock trap at address: 0x0")
    host.kmsg("systemd[1]: Started Session 3 of User root.", facility=3, level=6)  # not ours, not forged


def host_with_only_plain_processes(host: FakeHost, once: Once) -> None:
    host.kernel("6.8.0-49-generic").mode(None).mitigate(1).cpus(4).modules().boot_messages()
    host.process("build-runner", 8100, threads=[(8105, "CJobMgr::m_Work"), (8106, "cc 1/worker")])
    host.split_lock("CJobMgr::m_Work", 8105, "0x55e4a0b1c2d8")
    host.split_lock("cc 1/worker", 8106, "0x55e4a0b1c2f0")  # COMM with a space and a slash
    host.bus_lock("build-runner", 8100, "0x55e4a0b1c300")


def missing_dev_cpu(host: FakeHost, once: Once) -> None:
    host.kernel("6.8.0-49-generic").cpus(4).no_msr_device().boot_messages()


def eio_cpu(host: FakeHost, once: Once) -> None:
    host.kernel("6.8.0-49-generic").cpus(4).msr_error(2, "eio").boot_messages()


def every_vmm_kind(host: FakeHost, once: Once) -> None:
    host.kernel("6.8.0-49-generic").mode(None).mitigate(1).cpus(8).boot_messages()
    uuid = "7e1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
    vms = [
        host.vmm("qemu", "plain-qemu", pid=1000, uuid=uuid),
        host.vmm("qemu", "no-debug-threads", pid=1100, debug_threads=False),
        host.vmm("libvirt", "libvirt-vm", pid=1200, uuid=uuid),
        host.vmm("proxmox", "pve-vm", pid=1300, vmid=101),
        host.vmm("kata", "4c1e8a9d2b77", pid=1400, uuid=uuid),
        host.vmm("firecracker", "fn-3f9a", pid=1500),
        host.vmm("cloud-hypervisor", "ch-vm-01", pid=1600),
        host.vmm("crosvm", "crosvm-01", pid=1700),
    ]
    for vm in vms:
        host.split_lock(vm.vcpu_comm(1), vm.vcpu_tids[1], "0x401136")


def guest_bogus_trap_in_ratelimit_mode(host: FakeHost, once: Once) -> None:
    host.kernel("6.8.0-49-generic").mode("ratelimit:5").cpus(2).boot_messages()
    vm = host.qemu("bogus-vm", pid=2000, vcpus=1)
    host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0], "0xffffffff81000000", verb="bogus")


SCENARIOS: dict[str, Callable[[FakeHost, Once], None]] = {
    f.__name__: f
    for f in (
        warn_host_with_libvirt_guests,
        fatal_host_that_killed_a_guest,
        ratelimit_host_with_bus_locks,
        kernel_5_10_without_mitigate,
        drifting_cores,
        overrun_suppressed_and_forged,
        host_with_only_plain_processes,
        missing_dev_cpu,
        eio_cpu,
        every_vmm_kind,
        guest_bogus_trap_in_ratelimit_mode,
    )
}


def normalise(output: str) -> str:
    return OBSERVED_AT.sub('"observed_at":"<observed_at>"', output)


def agent_output(name: str, tmp_path: Path) -> str:
    host = FakeHost(tmp_path / "host", hostname=name.replace("_", "-")[:40], seed=1)
    state_dir = tmp_path / "state"
    SCENARIOS[name](host, lambda: run_once(host.root, state_dir))
    return normalise(run_once(host.root, state_dir))


def pretty(jsonl: str) -> list[str]:
    return [
        line
        for payload in jsonl.splitlines()
        for line in json.dumps(json.loads(payload), indent=1).splitlines()
    ]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_agent_once_stdout_output_equals_the_golden_file(
    name: str, tmp_path: Path, update_golden: bool
) -> None:
    output = agent_output(name, tmp_path)
    path = GOLDEN / f"{name}.jsonl"
    if update_golden:
        path.write_text(output)
        return
    assert path.exists(), f"no golden file {path}: run `pytest tests/agent --update-golden` and review it"
    expected = path.read_text()
    if output != expected:
        diff = "\n".join(difflib.unified_diff(pretty(expected), pretty(output), "golden", "now", lineterm=""))
        pytest.fail(f"agent output differs from {path.name}:\n{diff}", pytrace=False)


def check_contract(payload: dict[str, Any]) -> None:
    assert set(payload) == PAYLOAD_KEYS
    assert payload["schema"] == 1
    assert set(payload["host"]) == HOST_KEYS
    state = payload["state"]
    if state is not None:
        assert set(state) - {"consistency"} == STATE_KEYS
        if "consistency" in state:
            assert set(state["consistency"]) == CONSISTENCY_KEYS
            assert state["consistency"]["verdict"] in VERDICTS
        assert state["mode"] in ("off", "warn", "fatal", "ratelimit")
        assert state["mitigate"] in (0, 1, None)
        for cpu in state["cpus"]:
            assert set(cpu) == CPU_KEYS
    for event in payload["events"]:
        assert set(event) - {"evidence"} == EVENT_KEYS
        assert "evidence" not in event or (event["action"] == "sigbus" and event["evidence"] in EVIDENCE)
        assert event["source"] in ("kmsg", "tracefs", "import")
        assert event["kind"] in ("split_lock", "bus_lock")
        assert event["action"] in ACTIONS
        assert event["time"].endswith("Z")
        assert event["address"] is None or event["address"].startswith("0x")
        if event["guest"] is not None:
            assert set(event["guest"]) == GUEST_KEYS
    for gap in payload["gaps"]:
        assert set(gap) == GAP_KEYS
        assert gap["reason"] in ("overrun", "suppressed", "spool_full", "forged")


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_payloads_have_exactly_the_contract_keys(name: str) -> None:
    path = GOLDEN / f"{name}.jsonl"
    assert path.exists(), f"no golden file {path}"
    lines = path.read_text().splitlines()
    assert lines
    for line in lines:
        check_contract(json.loads(line))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_payloads_are_accepted_by_the_backend_ingest_schema(name: str) -> None:
    from app.ingest.schema import parse_payload

    for line in (GOLDEN / f"{name}.jsonl").read_text().splitlines():
        parse_payload(line.replace("<observed_at>", "2025-11-24T17:00:00Z").encode())  # raises if not
