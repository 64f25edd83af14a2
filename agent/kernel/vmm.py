"""Which guest a VMM process runs, from its cmdline, cgroup and thread names (docs/agent.md "Which guest").

Pure: text in, identity out. The kinds and where each tells its guest apart:

- QEMU (`qemu-system-*`, `qemu-kvm`, `kvm`): name from `-name guest=NAME,...` or `-name NAME`,
  UUID from `-uuid`; vCPU threads `CPU N/KVM` (with `debug-threads=on`).
- libvirt: QEMU in cgroup `machine.slice/machine-qemu\\x2dID\\x2dNAME.scope` (`\\x2d` is `-`),
  vCPU threads in `.../libvirt/vcpuN` below it since libvirt 7.1. -name first: the scope's name is
  truncated and sanitised by libvirt.
- Proxmox: `/usr/bin/kvm -id VMID -name NAME,...`, cgroup `qemu.slice/VMID.scope`, UUID from
  `-smbios type=1,uuid=...`.
- Kata Containers: QEMU with `-name sandbox-ID`: the guest is the sandbox ID.
- Firecracker (and its jailer, which execs it with `--id ID` in cgroup `.../firecracker/ID`):
  name from `--id`; vCPU threads `fc_vcpu N`.
- Cloud Hypervisor: name from the `--api-socket` file stem, else the cgroup's systemd unit;
  vCPU threads `vcpuN`.
- crosvm: name from the `--socket` file stem, else the cgroup's unit; vCPU threads `crosvm_vcpuN`.

Cloud Hypervisor and crosvm have no name option: the control socket's file name is what operators
(and their tooling, e.g. `ch-remote --api-socket /run/ch/web-1.sock`) use to address a VM, so its
stem is the name; a systemd unit (`ch-web-1.service`) is the fallback, the pid the last resort.

QEMU without `debug-threads=on` names every thread after the process (`qemu-system-x86`): the guest
is still found (the thread's Tgid is the VMM), only the vCPU index is unknown. libvirt, Proxmox and
Kata all run QEMU: vmm is "qemu" and the manager is kept for the docs and the cache, not sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

VMM_QEMU = "qemu"
VMM_FIRECRACKER = "firecracker"
VMM_CLOUD_HYPERVISOR = "cloud-hypervisor"
VMM_CROSVM = "crosvm"

_QEMU_EXES = ("qemu-kvm", "kvm")  # RHEL's /usr/libexec/qemu-kvm; Proxmox's and Debian's kvm

_VCPU_COMM = {
    VMM_QEMU: re.compile(r"CPU (\d+)/KVM"),
    VMM_FIRECRACKER: re.compile(r"fc_vcpu (\d+)"),
    VMM_CLOUD_HYPERVISOR: re.compile(r"vcpu(\d+)"),
    VMM_CROSVM: re.compile(r"crosvm_vcpu(\d+)"),
}
_LIBVIRT_VCPU_CGROUP = re.compile(r"/libvirt/vcpu(\d+)(?:/|$)")
# Older libvirt (< 3.x) scopes have no ID: machine-qemu\x2dNAME.scope.
_LIBVIRT_SCOPE = re.compile(r"machine-qemu-(?:(\d+)-)?(.+?)\.scope")
_PROXMOX_SCOPE = re.compile(r"/qemu\.slice/(\d+)\.scope")
_SYSTEMD_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_UNIT = re.compile(r"/([^/]+)\.(?:service|scope)(?:/|$)")


@dataclass(frozen=True)
class VmmIdentity:
    vmm: str  # qemu | firecracker | cloud-hypervisor | crosvm (payload Guest.vmm)
    name: str
    uuid: str | None
    manager: str | None = None  # libvirt | proxmox | kata | None: who started it


def parse_cmdline(raw: str) -> tuple[str, ...]:
    """proc/PID/cmdline: NUL-separated argv with a trailing NUL. Empty for kernel threads and zombies."""
    args = raw.split("\0")
    if args and args[-1] == "":
        args.pop()
    return tuple(args)


def parse_cgroup(text: str) -> str:
    """The process's cgroup path: the v2 `0::PATH` line, else the v1 line naming a machine/VM scope."""
    paths = []
    for line in text.splitlines():
        hierarchy, sep, rest = line.partition(":")
        _controllers, sep2, path = rest.partition(":")
        if not (sep and sep2):
            continue
        if hierarchy == "0":
            return path
        paths.append(path)
    for path in paths:
        if ".scope" in path or "machine" in path:
            return path
    return paths[0] if paths else ""


def unescape_unit(name: str) -> str:
    r"""systemd unit-name escaping as libvirt writes it: `\x2d` is `-`."""
    return _SYSTEMD_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name)


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def vmm_kind(args: Sequence[str]) -> str | None:
    """Which VMM an argv is, from argv[0] alone (cheap enough to ask of every process)."""
    if not args:
        return None
    exe = _basename(args[0])
    if exe.startswith("qemu-system-") or exe in _QEMU_EXES:
        return VMM_QEMU
    if exe == "firecracker":
        return VMM_FIRECRACKER
    if exe == "cloud-hypervisor":
        return VMM_CLOUD_HYPERVISOR
    if exe == "crosvm":
        return VMM_CROSVM
    return None


def _option(args: Sequence[str], *names: str) -> str | None:
    """The value of the last `-opt VALUE` / `--opt VALUE` / `--opt=VALUE` among `names`."""
    value: str | None = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(name + "="):
                value = arg[len(name) + 1 :]
    return value


def parse_qemu_opts(value: str, implied: str) -> dict[str, str]:
    """QEMU's `key=value,key=value` option syntax (`,,` is a literal comma); a first bare word is
    the implied key (`-name web-1,debug-threads=on` means guest=web-1)."""
    parts: list[str] = []
    current = ""
    i = 0
    while i < len(value):
        if value[i] == ",":
            if value[i + 1 : i + 2] == ",":
                current += ","
                i += 2
                continue
            parts.append(current)
            current = ""
        else:
            current += value[i]
        i += 1
    parts.append(current)
    opts: dict[str, str] = {}
    for n, part in enumerate(parts):
        key, sep, val = part.partition("=")
        if not sep:
            if n == 0:
                opts[implied] = part
            continue
        opts[key] = val
    return opts


def _socket_stem(value: str | None) -> str | None:
    if not value:
        return None
    # Cloud Hypervisor also takes `path=/run/ch/x.sock` or `fd=3`.
    if "=" in value:
        opts = dict(p.partition("=")[::2] for p in value.split(","))
        value = opts.get("path")
        if not value:
            return None
    stem = _basename(value)
    for ext in (".sock", ".socket"):
        if stem.endswith(ext) and len(stem) > len(ext):
            stem = stem[: -len(ext)]
    return stem or None


def _unit_name(cgroup: str) -> str | None:
    units = _UNIT.findall(cgroup)
    return unescape_unit(units[-1]) if units else None


def _identify_qemu(pid: int, args: Sequence[str], cgroup: str) -> VmmIdentity:
    name_value = _option(args, "-name", "--name")
    name = parse_qemu_opts(name_value, "guest").get("guest") if name_value is not None else None
    uuid = _option(args, "-uuid", "--uuid")
    manager: str | None = None

    scope = _LIBVIRT_SCOPE.search(unescape_unit(cgroup))
    vmid = _option(args, "-id")
    proxmox_scope = _PROXMOX_SCOPE.search(cgroup)
    if scope is not None:
        manager = "libvirt"
        # libvirt truncates and sanitises the name in the scope: -name is the true one.
        name = name or scope.group(2)
    elif vmid is not None or proxmox_scope is not None:
        manager = "proxmox"
        name = name or vmid or (proxmox_scope.group(1) if proxmox_scope else None)
        if uuid is None:
            smbios = _option(args, "-smbios")
            if smbios is not None:
                uuid = parse_qemu_opts(smbios, "type").get("uuid")
    elif name is not None and name.startswith("sandbox-"):
        manager = "kata"
        name = name[len("sandbox-") :]
    return VmmIdentity(VMM_QEMU, name or f"qemu-{pid}", uuid or None, manager)


def identify(pid: int, args: Sequence[str], cgroup: str = "") -> VmmIdentity | None:
    """The guest a process runs, or None when it is not a VMM (a plain host process)."""
    kind = vmm_kind(args)
    if kind is None:
        return None
    if kind == VMM_QEMU:
        return _identify_qemu(pid, args, cgroup)
    if kind == VMM_FIRECRACKER:
        # The jailer execs firecracker with its own `--id`; its cgroup is <parent>/firecracker/<id>.
        name = _option(args, "--id")
        if not name and "/firecracker/" in cgroup + "/":
            name = cgroup.rstrip("/").rsplit("/", 1)[-1] or None
        return VmmIdentity(VMM_FIRECRACKER, name or f"firecracker-{pid}", None, None)
    if kind == VMM_CLOUD_HYPERVISOR:
        name = _socket_stem(_option(args, "--api-socket")) or _unit_name(cgroup)
        return VmmIdentity(VMM_CLOUD_HYPERVISOR, name or f"cloud-hypervisor-{pid}", None, None)
    name = _socket_stem(_option(args, "--socket", "-s")) or _unit_name(cgroup)
    return VmmIdentity(VMM_CROSVM, name or f"crosvm-{pid}", None, None)


def vcpu_index(vmm: str, comm: str, cgroup: str = "") -> int | None:
    """The vCPU a thread runs, from its name (COMM) or, for libvirt 7.1+, its `libvirt/vcpuN` cgroup."""
    pattern = _VCPU_COMM.get(vmm)
    match = pattern.fullmatch(comm) if pattern is not None else None
    if match is not None:
        return int(match.group(1))
    cg = _LIBVIRT_VCPU_CGROUP.search(cgroup)
    return int(cg.group(1)) if cg is not None else None
