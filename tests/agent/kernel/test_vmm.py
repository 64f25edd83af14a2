"""VMM identity from argv, cgroup and thread names: a table per question, real command lines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.kernel import vmm
from agent.kernel.vmm import VmmIdentity

UUID = "8e2c5d1a-3f4b-4c6d-9e8f-0a1b2c3d4e5f"

# libvirt 9.0 on Debian 12, trimmed after the options that matter.
LIBVIRT_ARGV = (
    "/usr/bin/qemu-system-x86_64",
    "-name",
    "guest=web-1,debug-threads=on",
    "-S",
    "-object",
    '{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/lib/libvirt/qemu/domain-3-web-1/master-key.aes"}',
    "-machine",
    "pc-q35-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram",
    "-uuid",
    UUID,
)
LIBVIRT_CGROUP = "0::/machine.slice/machine-qemu\\x2d3\\x2dweb\\x2d1.scope/libvirt/emulator\n"

PROXMOX_ARGV = (
    "/usr/bin/kvm",
    "-id",
    "101",
    "-name",
    "db-2,debug-threads=on",
    "-no-shutdown",
    "-chardev",
    "socket,id=qmp,path=/var/run/qemu-server/101.qmp,server=on,wait=off",
    "-smbios",
    f"type=1,uuid={UUID}",
)

IDENTITIES = [
    # (name, pid, argv, cgroup text, expected)
    (
        "plain QEMU with guest= and -uuid",
        10,
        ("qemu-system-x86_64", "-name", "guest=a,debug-threads=on", "-uuid", UUID),
        "",
        VmmIdentity("qemu", "a", UUID, None),
    ),
    (
        "QEMU -name NAME",
        10,
        ("/usr/bin/qemu-system-x86_64", "-name", "vm7", "-m", "2048"),
        "",
        VmmIdentity("qemu", "vm7", None, None),
    ),
    (
        "QEMU -name NAME,debug-threads=on",
        10,
        ("qemu-system-x86_64", "-name", "vm7,debug-threads=on"),
        "",
        VmmIdentity("qemu", "vm7", None, None),
    ),
    (
        "QEMU name with an escaped comma",
        10,
        ("qemu-system-x86_64", "-name", "guest=a,,b,debug-threads=on"),
        "",
        VmmIdentity("qemu", "a,b", None, None),
    ),
    (
        "QEMU --name double dash",
        10,
        ("qemu-system-x86_64", "--name", "vm8"),
        "",
        VmmIdentity("qemu", "vm8", None, None),
    ),
    (
        "RHEL qemu-kvm",
        10,
        ("/usr/libexec/qemu-kvm", "-name", "guest=r,debug-threads=on"),
        "",
        VmmIdentity("qemu", "r", None, None),
    ),
    (
        "QEMU without -name is named by pid",
        77,
        ("qemu-system-x86_64", "-m", "1024"),
        "",
        VmmIdentity("qemu", "qemu-77", None, None),
    ),
    ("libvirt", 10, LIBVIRT_ARGV, LIBVIRT_CGROUP, VmmIdentity("qemu", "web-1", UUID, "libvirt")),
    (
        "libvirt without -name falls back to the unescaped scope",
        10,
        ("qemu-system-x86_64",),
        LIBVIRT_CGROUP,
        VmmIdentity("qemu", "web-1", None, "libvirt"),
    ),
    (
        "old libvirt scope without an ID",
        10,
        ("qemu-system-x86_64",),
        "0::/machine.slice/machine-qemu\\x2dold\\x2dvm.scope\n",
        VmmIdentity("qemu", "old-vm", None, "libvirt"),
    ),
    (
        "libvirt on cgroup v1",
        10,
        ("qemu-system-x86_64",),
        "12:pids:/machine.slice/machine-qemu\\x2d3\\x2dweb\\x2d1.scope\n1:name=systemd:/machine.slice/machine-qemu\\x2d3\\x2dweb\\x2d1.scope\n",
        VmmIdentity("qemu", "web-1", None, "libvirt"),
    ),
    ("Proxmox", 10, PROXMOX_ARGV, "0::/qemu.slice/101.scope\n", VmmIdentity("qemu", "db-2", UUID, "proxmox")),
    (
        "Proxmox without -name is its VMID",
        10,
        ("/usr/bin/kvm", "-id", "105"),
        "0::/qemu.slice/105.scope\n",
        VmmIdentity("qemu", "105", None, "proxmox"),
    ),
    (
        "Kata: the guest is the sandbox ID",
        10,
        ("/opt/kata/bin/qemu-system-x86_64", "-name", "sandbox-4f1c9a", "-uuid", UUID),
        "0::/kubepods/besteffort/pod1/kata_4f1c9a\n",
        VmmIdentity("qemu", "4f1c9a", UUID, "kata"),
    ),
    (
        "Firecracker --id",
        10,
        ("/usr/bin/firecracker", "--id", "fc-9", "--api-sock", "/run/fc/fc-9.sock"),
        "",
        VmmIdentity("firecracker", "fc-9", None, None),
    ),
    (
        "Firecracker exec'd by the jailer",
        10,
        ("/firecracker", "--id=jail-3", "--start-time-us", "1"),
        "0::/firecracker/jail-3\n",
        VmmIdentity("firecracker", "jail-3", None, None),
    ),
    (
        "Firecracker without --id takes the jailer's cgroup",
        10,
        ("firecracker",),
        "0::/firecracker/jail-4\n",
        VmmIdentity("firecracker", "jail-4", None, None),
    ),
    (
        "Cloud Hypervisor socket path",
        10,
        ("/usr/bin/cloud-hypervisor", "--api-socket", "/run/ch/web-1.sock"),
        "",
        VmmIdentity("cloud-hypervisor", "web-1", None, None),
    ),
    (
        "Cloud Hypervisor path= form",
        10,
        ("cloud-hypervisor", "--api-socket", "path=/run/ch/api-7.socket"),
        "",
        VmmIdentity("cloud-hypervisor", "api-7", None, None),
    ),
    (
        "Cloud Hypervisor fd= socket falls back to the unit",
        10,
        ("cloud-hypervisor", "--api-socket", "fd=3"),
        "0::/system.slice/ch-web\\x2d2.service\n",
        VmmIdentity("cloud-hypervisor", "ch-web-2", None, None),
    ),
    (
        "Cloud Hypervisor with nothing is named by pid",
        12,
        ("cloud-hypervisor",),
        "0::/\n",
        VmmIdentity("cloud-hypervisor", "cloud-hypervisor-12", None, None),
    ),
    (
        "crosvm --socket",
        10,
        ("/usr/bin/crosvm", "run", "--socket", "/run/crosvm/term.sock", "vmlinux"),
        "",
        VmmIdentity("crosvm", "term", None, None),
    ),
    (
        "crosvm falls back to the unit",
        10,
        ("crosvm", "run", "vmlinux"),
        "0::/system.slice/crosvm-dev.service\n",
        VmmIdentity("crosvm", "crosvm-dev", None, None),
    ),
]


@pytest.mark.parametrize(
    ("pid", "argv", "cgroup", "expected"), [c[1:] for c in IDENTITIES], ids=[c[0] for c in IDENTITIES]
)
def test_vmm_process_names_its_guest(
    pid: int, argv: tuple[str, ...], cgroup: str, expected: VmmIdentity
) -> None:
    assert vmm.identify(pid, argv, vmm.parse_cgroup(cgroup)) == expected


PLAIN = [
    ("nginx", ("/usr/sbin/nginx", "-g", "daemon off;")),
    ("a kernel thread has no argv", ()),
    ("a wrapper script mentioning qemu is not QEMU", ("/bin/sh", "/usr/bin/qemu-system-x86_64")),
    ("qemu-img is not a VMM", ("/usr/bin/qemu-img", "convert")),
    ("firecracker-ctl is not firecracker", ("/usr/bin/firecracker-ctl",)),
]


@pytest.mark.parametrize("argv", [p[1] for p in PLAIN], ids=[p[0] for p in PLAIN])
def test_plain_processes_run_no_guest(argv: tuple[str, ...]) -> None:
    assert vmm.identify(1, argv, "") is None


VCPUS = [
    ("QEMU debug-threads", "qemu", "CPU 3/KVM", "", 3),
    ("QEMU vCPU 12", "qemu", "CPU 12/KVM", "", 12),
    ("QEMU without debug-threads", "qemu", "qemu-system-x86", "", None),
    ("QEMU I/O thread", "qemu", "IO iothread1", "", None),
    ("QEMU TCG thread is not a KVM vCPU", "qemu", "CPU 0/TCG", "", None),
    (
        "libvirt vcpuN cgroup",
        "qemu",
        "qemu-system-x86",
        "/machine.slice/machine-qemu\\x2d3\\x2dweb.scope/libvirt/vcpu5",
        5,
    ),
    (
        "libvirt emulator cgroup",
        "qemu",
        "qemu-system-x86",
        "/machine.slice/machine-qemu\\x2d3\\x2dweb.scope/libvirt/emulator",
        None,
    ),
    ("Firecracker", "firecracker", "fc_vcpu 1", "", 1),
    ("Firecracker API thread", "firecracker", "fc_api", "", None),
    ("Cloud Hypervisor", "cloud-hypervisor", "vcpu7", "", 7),
    ("crosvm", "crosvm", "crosvm_vcpu2", "", 2),
    ("another VMM's naming does not count", "crosvm", "vcpu2", "", None),
]


@pytest.mark.parametrize(
    ("kind", "comm", "cgroup", "expected"), [v[1:] for v in VCPUS], ids=[v[0] for v in VCPUS]
)
def test_vcpu_index_comes_from_the_thread_name_or_libvirt_cgroup(
    kind: str, comm: str, cgroup: str, expected: int | None
) -> None:
    assert vmm.vcpu_index(kind, comm, cgroup) == expected


def test_cmdline_is_nul_separated_with_a_trailing_nul() -> None:
    assert vmm.parse_cmdline("/usr/bin/kvm\x00-id\x00101\x00") == ("/usr/bin/kvm", "-id", "101")
    assert vmm.parse_cmdline("") == ()


def test_systemd_unit_escapes_are_undone() -> None:
    assert vmm.unescape_unit("machine-qemu\\x2d3\\x2dweb\\x2d1.scope") == "machine-qemu-3-web-1.scope"


def test_qemu_opts_honour_the_implied_key_and_doubled_commas() -> None:
    assert vmm.parse_qemu_opts("web,process=qemu:web,debug-threads=on", "guest") == {
        "guest": "web",
        "process": "qemu:web",
        "debug-threads": "on",
    }
    assert vmm.parse_qemu_opts("type=1,uuid=x", "type") == {"type": "1", "uuid": "x"}


@settings(max_examples=300, deadline=None)
@given(
    argv=st.lists(
        st.sampled_from(
            [
                "qemu-system-x86_64",
                "-name",
                "--id",
                "-uuid",
                "-id",
                "-smbios",
                "crosvm",
                "firecracker",
                "cloud-hypervisor",
                "--api-socket",
                "--socket",
                "=",
                ",",
                ",,",
                "guest=",
                "path=",
                "sandbox-",
            ]
        )
        | st.text(max_size=20),
        max_size=8,
    ),
    cgroup=st.text(max_size=80),
    comm=st.text(max_size=20),
)
def test_hostile_argv_cgroup_and_comm_never_crash_and_always_name_a_guest(
    argv: list[str], cgroup: str, comm: str
) -> None:
    identity = vmm.identify(1, argv, vmm.parse_cgroup(cgroup))
    if identity is not None:
        assert identity.name
        assert identity.vmm in ("qemu", "firecracker", "cloud-hypervisor", "crosvm")
        vmm.vcpu_index(identity.vmm, comm, cgroup)
