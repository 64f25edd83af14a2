"""FakeHost: a directory laid out like `/` for one Intel KVM host, shared by tests, simulate and demo.

Every method writes the files at once, so a host can be grown while an agent reads it:

    host = FakeHost(tmp_path).kernel("6.8.0").mode("warn").mitigate(1).cpus(4)
    vm = host.qemu("web-1", pid=4242, vcpus=2, uuid="...")      # libvirt-style QEMU guest
    host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0])            # a `took a split_lock trap` line

What it writes (docs/agent.md): `proc/{cmdline,cpuinfo,stat,modules}`, `proc/sys/kernel/{osrelease,
hostname,random/boot_id,split_lock_mitigate}`, per process `proc/PID/{status,cmdline,cgroup,comm}`,
per thread `proc/TID/status` and `proc/PID/task/TID/comm`, sparse `dev/cpu/N/msr` files with 8
bytes at offset = MSR index, a `dev/kmsg` text file of records (`PRIO,SEQ,USEC,FLAG;TEXT`, one per
line, continuation lines start with a space), and optionally `sys/kernel/tracing/`.

What it cannot fake, it approximates with the same observable fact: a CPU whose MSRs give EIO is an
empty msr file (every pread is short); a kmsg overrun is a jump in SEQ (the records were
overwritten); a ring buffer that wrapped keeps only the newest records in the file.
"""

from __future__ import annotations

import os
import random
import shutil
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

# Kernel constants stated here on their own, not imported from agent.kernel: the fake host is what
# tests compare the agent against, so it must not share the agent's mistakes (issue 16).
MSR_TEST_CTRL = 0x33
MSR_IA32_CORE_CAPS = 0xCF
MSR_IA32_DEBUGCTL = 0x1D9
TEST_CTRL_SPLIT_LOCK_DETECT = 1 << 29
CORE_CAPS_SPLIT_LOCK_DETECT = 1 << 5
DEBUGCTL_BUS_LOCK_DETECT = 1 << 2
PREFIX = "x86/split lock detection: "
KNOB = "sys/kernel/split_lock_detect"  # RHEL 8's runtime knob

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is 3.11; the agent runs on 3.9 (issue 17)

DEFAULT_CPU_MODEL = "Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz"
FIXED_BTIME = 1764000000  # 2025-11-24T16:00:00Z: deterministic tests and golden files

VmmKind = Literal["qemu", "libvirt", "proxmox", "kata", "firecracker", "cloud-hypervisor", "crosvm"]


def _kernel_tuple(release: str) -> tuple[int, int]:
    parts = release.split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


@dataclass
class FakeVmm:
    """One VMM process on the fake host, with its vCPU thread ids."""

    kind: VmmKind
    name: str
    pid: int
    vcpu_tids: list[int]
    uuid: str | None
    debug_threads: bool
    vmid: int | None = None

    def vcpu_comm(self, index: int) -> str:
        """The thread name the kernel prints for vCPU `index` (COMM, at most 15 bytes)."""
        if self.kind in ("qemu", "libvirt", "proxmox", "kata"):
            return f"CPU {index}/KVM" if self.debug_threads else "qemu-system-x86"
        if self.kind == "firecracker":
            return f"fc_vcpu {index}"
        if self.kind == "cloud-hypervisor":
            return f"vcpu{index}"
        return f"crosvm_vcpu{index}"


@dataclass
class FakeProcess:
    """A plain host process and its extra thread ids."""

    comm: str
    tids: list[int]


@dataclass
class FakeHost:
    root: Path
    hostname: str = "host-1"
    live: bool = False  # True: kmsg USEC follows the wall clock (simulate, demo)
    btime: int | None = None
    seed: int = 0
    boot_id: str = ""
    _kernel: str = "6.8.0-49-generic"
    _cmdline_mode: str | None = None  # value of split_lock_detect=, None = absent
    _default_mode: str = "warn"  # the mode without split_lock_detect=: mainline warn, RHEL 8 off
    _knob: str | None = None  # RHEL 8's runtime knob, None = absent (mainline)
    _mitigate: int | None = 1
    _cpus: int = 0
    _cpu_model: str = DEFAULT_CPU_MODEL
    _sld_supported: bool = True
    _bld_supported: bool = True
    _seq: int = 0
    _usec: int = 4_000_000
    _processes: dict[int, FakeVmm | FakeProcess] = field(default_factory=dict)
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._rng = random.Random(self.seed)
        if self.btime is None:
            self.btime = int(time.time()) - 3600 if self.live else FIXED_BTIME
        if not self.boot_id:
            self.boot_id = str(uuidlib.UUID(int=self._rng.getrandbits(128), version=4))
        for d in ("proc/sys/kernel/random", "dev/cpu", "dev"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self._write("proc/sys/kernel/hostname", self.hostname + "\n")
        self._write("proc/sys/kernel/random/boot_id", self.boot_id + "\n")
        self._write("proc/stat", f"cpu  1 0 1 100 0 0 0 0 0 0\nbtime {self.btime}\nprocesses 1000\n")
        self._write(
            "proc/modules",
            "kvm_intel 413696 0 - Live 0x0000000000000000\n"
            "kvm 1380352 1 kvm_intel, Live 0x0000000000000000\n",
        )
        self.kernel(self._kernel)
        self._write_cmdline()
        self.mitigate(self._mitigate)
        kmsg = self.root / "dev/kmsg"
        if not kmsg.exists():
            kmsg.write_text("")

    # -- host facts -------------------------------------------------------------------------

    def _write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def kernel(self, release: str) -> Self:
        if release.count(".") == 1:
            release += ".0"
        self._kernel = release
        self._write("proc/sys/kernel/osrelease", release + "\n")
        return self

    @property
    def kernel_version(self) -> tuple[int, int]:
        return _kernel_tuple(self._kernel)

    def mode(self, value: str | None) -> Self:
        """`split_lock_detect=VALUE` on the command line (None: not given, the kernel's default warn)."""
        self._cmdline_mode = value
        self._write_cmdline()
        return self

    def default_mode(self, value: str) -> Self:
        """The mode this kernel picks without split_lock_detect= (RHEL 8's backport: off)."""
        self._default_mode = value
        return self

    def knob(self, value: str | None) -> Self:
        """RHEL 8's runtime `sys/kernel/split_lock_detect` knob (None: absent, as on mainline)."""
        self._knob = value
        path = self.root / KNOB
        if value is None:
            path.unlink(missing_ok=True)
        else:
            self._write(KNOB, f"{value}\n")
        return self

    @property
    def backport(self) -> bool:
        """A distribution kernel older than 5.7 with split-lock detection backported."""
        return self.kernel_version < (5, 7) and (self._knob is not None or self._default_mode != "warn")

    def _write_cmdline(self) -> None:
        sld = f" split_lock_detect={self._cmdline_mode}" if self._cmdline_mode is not None else ""
        self._write(
            "proc/cmdline",
            f"BOOT_IMAGE=/vmlinuz-{self._kernel} root=/dev/mapper/vg0-root ro quiet{sld} intel_iommu=on\n",
        )

    def mitigate(self, value: int | None) -> Self:
        """proc/sys/kernel/split_lock_mitigate (None: the file is absent, as before 5.19)."""
        self._mitigate = value
        path = self.root / "proc/sys/kernel/split_lock_mitigate"
        if value is None:
            path.unlink(missing_ok=True)
        else:
            self._write("proc/sys/kernel/split_lock_mitigate", f"{value}\n")
        return self

    @property
    def sysctl_mitigate(self) -> int | None:
        """split_lock_mitigate as written (None: the sysctl is absent)."""
        return self._mitigate

    def modules(self, *names: str) -> Self:
        self._write("proc/modules", "".join(f"{n} 413696 0 - Live 0x0000000000000000\n" for n in names))
        return self

    def cpus(
        self,
        count: int,
        *,
        model: str = DEFAULT_CPU_MODEL,
        sld_supported: bool = True,
        bld_supported: bool = True,
        sld_on: bool | None = None,
        bld_on: bool | None = None,
    ) -> Self:
        """`count` CPUs in cpuinfo and dev/cpu/N/msr. sld_on defaults to what the mode implies."""
        self._cpus, self._cpu_model = count, model
        self._sld_supported, self._bld_supported = sld_supported, bld_supported
        flags = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts"
        flags += " acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc"
        flags += " vmx flexpriority ept vpid"
        # The kernel sets `split_lock_detect` after probing: from 5.7 (5.7-5.12 only when the mode is
        # not off; 5.13+ even when off), and on a backport; a kernel without the code never does.
        knows = self.kernel_version >= (5, 7) or self.backport
        hidden = self.kernel_version < (5, 13) and not self.backport and self._boot_mode() == "off"
        if sld_supported and knows and not hidden:
            flags += " split_lock_detect"
        if bld_supported:
            flags += " bus_lock_detect"
        blocks = [
            f"processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 106\n"
            f"model name\t: {model}\nstepping\t: 6\ncpu MHz\t\t: 2300.000\nflags\t\t: {flags}\n"
            for n in range(count)
        ]
        self._write("proc/cpuinfo", "\n".join(blocks) + "\n")
        cpu_dir = self.root / "dev/cpu"
        if cpu_dir.exists():
            shutil.rmtree(cpu_dir)
        default_sld = self._implied_sld_on() if sld_on is None else sld_on
        default_bld = self._implied_bld_on() if bld_on is None else bld_on
        for n in range(count):
            self.cpu_state(n, sld_on=default_sld, bld_on=default_bld)
        return self

    def _boot_mode(self) -> str:
        """The mode the kernel booted in: the command line as this kernel parses it."""
        if self.kernel_version < (5, 7) and not self.backport:
            return "off"  # no split-lock detection in this kernel at all
        mode = self._cmdline_mode or self._default_mode
        if mode in ("off", "warn", "fatal"):
            return mode
        if mode.startswith("ratelimit:") and (self.kernel_version >= (5, 14) or self.backport):
            return mode  # ratelimit:N arrived in 5.14; older kernels fall back to warn
        return "warn"  # the kernel's fallback for an invalid value

    @property
    def effective_mode(self) -> str:
        """The split-lock mode in force now (off, warn, fatal, ratelimit:N), as this kernel decides it."""
        return self._effective_mode()

    def _effective_mode(self) -> str:
        """The mode now: the runtime knob where there is one, else the boot's."""
        if self._knob is not None and self._knob in ("off", "warn", "fatal"):
            return self._knob
        return self._boot_mode()

    def _implied_sld_on(self) -> bool:
        # ratelimit:N turns #AC off (docs/kernel.md); off is off; before 5.7 firmware left it clear.
        return self._sld_supported and self._effective_mode() in ("warn", "fatal")

    def _implied_bld_on(self) -> bool:
        # The kernel clears DEBUGCTL bit 2 on CPUs with split-lock detection in warn or fatal mode:
        # #AC does the job there; #DB is armed only where it is the mechanism (ratelimit, or a CPU
        # with bus-lock but no split-lock detection).
        if not self._bld_supported or (self.kernel_version < (5, 13) and not self.backport):
            return False
        mode = self._effective_mode()
        if mode == "off":
            return False
        return mode.startswith("ratelimit:") or not self._sld_supported

    def cpu_state(self, cpu: int, *, sld_on: bool, bld_on: bool | None = None) -> Self:
        """Write CPU `cpu`'s MSRs: TEST_CTRL bit 29, CORE_CAPS bit 5, DEBUGCTL bit 2."""
        path = self.root / f"dev/cpu/{cpu}/msr"
        path.parent.mkdir(parents=True, exist_ok=True)
        test_ctrl = TEST_CTRL_SPLIT_LOCK_DETECT if sld_on else 0
        core_caps = CORE_CAPS_SPLIT_LOCK_DETECT if self._sld_supported else 0
        debugctl = DEBUGCTL_BUS_LOCK_DETECT if (self._implied_bld_on() if bld_on is None else bld_on) else 0
        with open(path, "r+b" if path.exists() and path.stat().st_size else "wb") as f:
            for index, value in (
                (MSR_TEST_CTRL, test_ctrl),
                (MSR_IA32_CORE_CAPS, core_caps),
                (MSR_IA32_DEBUGCTL, debugctl),
            ):
                f.seek(index)
                f.write(value.to_bytes(8, "little"))
        return self

    def msr_error(self, cpu: int, kind: Literal["eio", "missing"]) -> Self:
        """CPU `cpu` gives EIO on every MSR (an empty file: every pread is short), or has no msr file."""
        path = self.root / f"dev/cpu/{cpu}/msr"
        if kind == "eio":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
        else:
            path.unlink(missing_ok=True)
        return self

    def no_msr_device(self) -> Self:
        """The msr module is not loaded: no dev/cpu at all."""
        shutil.rmtree(self.root / "dev/cpu", ignore_errors=True)
        return self

    # -- processes --------------------------------------------------------------------------

    def _write_process(
        self, pid: int, comm: str, cmdline: list[str], cgroup: str, tids: list[int], thread_comms: list[str]
    ) -> None:
        base = f"proc/{pid}"
        self._write(f"{base}/cmdline", "\0".join(cmdline) + "\0")
        self._write(f"{base}/comm", comm[:15] + "\n")
        self._write(f"{base}/cgroup", f"0::{cgroup}\n")
        for tid, tcomm in zip([pid, *tids], [comm, *thread_comms]):
            status = (
                f"Name:\t{tcomm[:15]}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\nNgid:\t0\n"
                f"Pid:\t{tid}\nPPid:\t1\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
            )
            self._write(f"proc/{tid}/status", status)
            self._write(f"{base}/task/{tid}/comm", tcomm[:15] + "\n")
            if tid != pid:
                # /proc/TID of a thread is reachable though not listed: same files as its leader.
                self._write(f"proc/{tid}/cmdline", "\0".join(cmdline) + "\0")
                self._write(f"proc/{tid}/cgroup", f"0::{cgroup}\n")

    def process(
        self,
        comm: str,
        pid: int,
        *,
        threads: list[tuple[int, str]] | None = None,
        cmdline: list[str] | None = None,
    ) -> Self:
        """A plain host process (no guest): its split locks are events without a guest."""
        threads = threads or []
        self._write_process(
            pid,
            comm,
            cmdline or [f"/usr/bin/{comm}"],
            "/system.slice/app.service",
            [t for t, _ in threads],
            [c for _, c in threads],
        )
        self._processes[pid] = FakeProcess(comm, [t for t, _ in threads])
        return self

    def vmm(
        self,
        kind: VmmKind,
        name: str,
        *,
        pid: int,
        vcpus: int = 2,
        uuid: str | None = None,
        debug_threads: bool = True,
        vmid: int | None = None,
    ) -> FakeVmm:
        """A VMM process running guest `name`, laid out as that VMM and its manager do it."""
        tids = [pid + 1 + i for i in range(vcpus)]
        if kind == "kata":
            debug_threads = False  # Kata's QEMU leaves vCPU threads named after the process
        vm = FakeVmm(kind, name, pid, tids, uuid, debug_threads, vmid)
        thread_comms = [vm.vcpu_comm(i) for i in range(vcpus)]
        if kind in ("qemu", "libvirt"):
            cmd = [
                "/usr/bin/qemu-system-x86_64",
                "-name",
                f"guest={name},debug-threads={'on' if debug_threads else 'off'}",
            ]
            if uuid:
                cmd += ["-uuid", uuid]
            cmd += ["-machine", "pc-q35-8.2,accel=kvm", "-smp", str(vcpus), "-m", "4096"]
            if kind == "libvirt":
                escaped = name.replace("-", "\\x2d")  # systemd unit-name escaping, as libvirt's scopes
                scope = f"machine-qemu\\x2d{pid % 1000}\\x2d{escaped}.scope"
                cgroup = f"/machine.slice/{scope}/libvirt/emulator"
            else:
                cgroup = "/user.slice/user-0.slice/session-1.scope"
            comm = "qemu-system-x86"
        elif kind == "proxmox":
            vmid = vmid if vmid is not None else 100 + pid % 900
            vm.vmid = vmid
            cmd = ["/usr/bin/kvm", "-id", str(vmid), "-name", f"{name},debug-threads=on"]
            if uuid:
                cmd += ["-smbios", f"type=1,uuid={uuid}"]
            cgroup = f"/qemu.slice/{vmid}.scope"
            comm = "kvm"
        elif kind == "kata":
            cmd = [
                "/opt/kata/bin/qemu-system-x86_64",
                "-name",
                f"sandbox-{name}",
                "-uuid",
                uuid or str(uuidlib.UUID(int=pid, version=4)),
                "-machine",
                "q35,accel=kvm",
            ]
            vm.uuid = cmd[4]
            cgroup = f"/kubepods/besteffort/pod{pid}/kata_{name}"
            comm = "qemu-system-x86"
        elif kind == "firecracker":
            cmd = ["/usr/bin/firecracker", "--id", name, "--api-sock", f"/run/fc/{name}.sock"]
            cgroup = f"/firecracker/{name}"
            comm = "firecracker"
        elif kind == "cloud-hypervisor":
            cmd = [
                "/usr/bin/cloud-hypervisor",
                "--api-socket",
                f"/run/ch/{name}.sock",
                "--kernel",
                "/var/lib/ch/vmlinux",
                "--cpus",
                f"boot={vcpus}",
            ]
            cgroup = f"/system.slice/ch-{name}.service"
            comm = "cloud-hyperviso"
        else:
            cmd = [
                "/usr/bin/crosvm",
                "run",
                "--cpus",
                str(vcpus),
                "--socket",
                f"/run/crosvm/{name}.sock",
                "/var/lib/crosvm/vmlinux",
            ]
            cgroup = f"/system.slice/crosvm-{name}.service"
            comm = "crosvm"
        self._write_process(pid, comm, cmd, cgroup, tids, thread_comms)
        if kind == "libvirt":
            # libvirt 7.1+ (cgroup v2) moves each vCPU thread into <scope>/libvirt/vcpuN; the
            # emulator threads stay in <scope>/libvirt/emulator.
            vcpu_base = cgroup.rsplit("/", 1)[0]
            for index, tid in enumerate(tids):
                self._write(f"proc/{tid}/cgroup", f"0::{vcpu_base}/vcpu{index}\n")
        self._processes[pid] = vm
        return vm

    def qemu(
        self,
        name: str,
        *,
        pid: int,
        vcpus: int = 2,
        uuid: str | None = None,
        libvirt: bool = True,
        debug_threads: bool = True,
    ) -> FakeVmm:
        return self.vmm(
            "libvirt" if libvirt else "qemu",
            name,
            pid=pid,
            vcpus=vcpus,
            uuid=uuid,
            debug_threads=debug_threads,
        )

    def kill(self, pid: int) -> Self:
        """The process is gone (e.g. QEMU killed by SIGBUS): its /proc entries vanish."""
        proc = self._processes.pop(pid, None)
        tids = proc.vcpu_tids if isinstance(proc, FakeVmm) else proc.tids if proc is not None else []
        for tid in [pid, *tids]:
            shutil.rmtree(self.root / f"proc/{tid}", ignore_errors=True)
        return self

    # -- kernel log -------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """SEQ of the next record."""
        return self._seq

    def _next_usec(self, usec: int | None) -> int:
        if usec is not None:
            self._usec = usec
        elif self.live:
            assert self.btime is not None
            self._usec = max(self._usec + 1, int((time.time() - self.btime) * 1_000_000))
        else:
            self._usec += 1000
        return self._usec

    def kmsg(
        self,
        text: str,
        *,
        level: int = 4,
        facility: int = 0,
        usec: int | None = None,
        continuation: list[str] | None = None,
    ) -> int:
        """Append one record; returns its SEQ."""
        seq = self._seq
        self._seq += 1
        line = f"{facility * 8 + level},{seq},{self._next_usec(usec)},-;{text}\n"
        for cont in continuation or []:
            line += f" {cont}\n"
        with open(self.root / "dev/kmsg", "a", encoding="utf-8", errors="surrogateescape") as f:
            f.write(line)
        return seq

    def boot_messages(self) -> Self:
        """The boot mode line(s) this kernel prints for the configured mode (docs/kernel.md)."""
        mode = self._boot_mode()
        self.kmsg("Linux version " + self._kernel + " (buildd@lcy02) #1 SMP", level=5)
        if self.kernel_version < (5, 7) and not self.backport:
            return self  # no split-lock detection: nothing printed
        if self.kernel_version < (5, 13) and not self.backport:
            text = {
                "off": "disabled",
                "warn": "warning about user-space split_locks",
                "fatal": "sending SIGBUS on user-space split_locks",
            }.get(mode, "disabled")
            self.kmsg(PREFIX + text, level=6)
            return self
        if mode == "off":
            if self.kernel_version < (6, 10):
                self.kmsg(PREFIX + "disabled", level=6)
            return self
        if mode.startswith("ratelimit:"):
            self.kmsg(
                PREFIX + f"#DB: setting system wide bus lock rate limit to {mode.split(':', 1)[1]}/sec",
                level=6,
            )
            return self
        user = "sending SIGBUS on" if mode == "fatal" else "warning on"
        if self._sld_supported:
            self.kmsg(
                PREFIX + f"#AC: crashing the kernel on kernel split_locks and {user} user-space split_locks",
                level=6,
            )
        if self._bld_supported:
            self.kmsg(PREFIX + f"#DB: {user} user-space bus_locks", level=6)
        return self

    def split_lock(
        self,
        comm: str,
        tid: int,
        address: str = "0x401136",
        *,
        verb: Literal["took", "fatal", "bogus"] = "took",
        usec: int | None = None,
    ) -> int:
        text = (
            f"#AC: {comm}/{tid} {'took a' if verb == 'took' else verb} split_lock trap at address: {address}"
        )
        return self.kmsg(PREFIX + text, usec=usec)

    def bus_lock(self, comm: str, tid: int, address: str = "0x401136", *, usec: int | None = None) -> int:
        return self.kmsg(PREFIX + f"#DB: {comm}/{tid} took a bus_lock trap at address: {address}", usec=usec)

    def suppressed(
        self, count: int, site: Literal["split_lock_warn", "handle_bus_lock"] = "split_lock_warn"
    ) -> int:
        return self.kmsg(f"{site}: {count} callbacks suppressed")

    def alignment_trap(self, comm: str, tid: int, ip: str = "401136") -> int:
        """A user task in fatal mode: `traps: COMM[TID] trap alignment check ...`."""
        return self.kmsg(
            f"traps: {comm}[{tid}] trap alignment check ip:{ip} sp:7ffd8c5e3f10 error:0 "
            "in a.out[401000+1000]",
            level=6,
        )

    def forged(self, text: str, *, facility: int = 1) -> int:
        """A record written by a process to /dev/kmsg: always facility >= 1."""
        return self.kmsg(text, facility=facility)

    def overrun(self, lost: int) -> Self:
        """`lost` records were overwritten before anyone read them: SEQ jumps."""
        self._seq += lost
        return self

    def wrap(self, keep: int) -> Self:
        """The ring buffer wrapped: only the newest `keep` records are still readable."""
        path = self.root / "dev/kmsg"
        records: list[str] = []
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                if line.startswith(" ") and records:
                    records[-1] += line
                else:
                    records.append(line)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(records[-keep:] if keep else []), encoding="utf-8", errors="surrogateescape")
        os.replace(tmp, path)
        return self

    def reboot(self, *, boot_id: str | None = None) -> Self:
        """A new boot: new boot_id and btime, an empty log whose SEQ starts at 0, no processes."""
        for pid in list(self._processes):
            self.kill(pid)
        self.boot_id = boot_id or str(uuidlib.UUID(int=self._rng.getrandbits(128), version=4))
        assert self.btime is not None
        self.btime = int(time.time()) - 60 if self.live else self.btime + 86400
        self._seq, self._usec = 0, 4_000_000
        self._write("proc/sys/kernel/random/boot_id", self.boot_id + "\n")
        self._write("proc/stat", f"cpu  1 0 1 100 0 0 0 0 0 0\nbtime {self.btime}\nprocesses 1000\n")
        (self.root / "dev/kmsg").write_text("")
        return self

    # -- tracefs ----------------------------------------------------------------------------

    def tracefs(self) -> Self:
        """A writable tracefs at sys/kernel/tracing with kprobe_events and a trace_pipe that grows."""
        base = self.root / "sys/kernel/tracing"
        (base / "events/kprobes").mkdir(parents=True, exist_ok=True)
        for name in ("kprobe_events", "trace_pipe"):
            (base / name).touch()
        (base / "available_filter_functions").write_text(
            "split_lock_warn\nhandle_guest_split_lock\nhandle_bus_lock\nhandle_user_split_lock\n"
        )
        # What the kernel shows once `p:splitwatch/<func> <func>` is written to kprobe_events (a
        # plain file cannot react to the write, so the event directories exist from the start).
        for func in ("split_lock_warn", "handle_guest_split_lock", "handle_bus_lock"):
            (base / f"events/splitwatch/{func}").mkdir(parents=True, exist_ok=True)
            (base / f"events/splitwatch/{func}/enable").write_text("0\n")
        return self

    def trace_hit(self, probe: str, comm: str, tid: int, cpu: int = 0, *, usec: int | None = None) -> Self:
        """One kprobe hit as trace_pipe prints it: `COMM-TID [CPU] FLAGS SECS.USECS: EVENT: (FUNC+...)`."""
        at = self._next_usec(usec)
        line = (
            f"{comm:>16}-{tid:<7} [{cpu:03d}] d..1. {at // 1_000_000:5d}.{at % 1_000_000:06d}: "
            f"splitwatch_{probe}: ({probe}+0x0/0x90)\n"
        )
        with open(self.root / "sys/kernel/tracing/trace_pipe", "a") as f:
            f.write(line)
        return self
