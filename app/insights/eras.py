"""Kernel eras of split-lock handling, from a release string and what the host reported. Pure.

What a warn-mode trap costs, and how far its count can be trusted, depends on the kernel
(docs/kernel.md, read from kernel source):

    < 5.7      `none`        no split-lock detection in mainline: nothing is trapped or counted
    5.7-5.18   `per_task`    after its first trap a task runs with detection off for life (TIF_SLD),
                             so its later split locks are neither trapped nor counted: counts are floors
    5.19-6.1   `misery`      split_lock_warn() sleeps 10 ms and takes a one-core-at-a-time semaphore
                             (commit b041b525dab9), unconditionally: no sysctl yet
    6.2+, 6.1.y `mitigate_on` the `split_lock_mitigate` sysctl (commit 727209376f49, backported to
               with the sysctl  6.1.y) is 1: misery mode as above
               `stuck_off`   the sysctl is 0 and the kernel predates "x86/split_lock: Fix the delayed
                             detection logic" (c929d08df8be, v6.15): one global re-enable work item, so
                             a core whose trap races another's is never turned back on
               `mitigate_off` the sysctl is 0 on 6.15+: a plain warning, detection back after 2 jiffies
    anything   `unknown`     the release does not parse, or a distribution kernel whose version hides
                             backports (RHEL 8.7's 4.18.0-394.el8 has split-lock detection)

The evidence the agent reports beats the version: a `split_lock_mitigate` value that was read
proves the sysctl exists whatever the version says; mitigate null on 5.19-6.1 means no sysctl
(misery on), on 6.2+ that the agent could not read it (the kernel default, 1, is assumed and
said). The agent's own, fuller evidence-based era (boot line, cpuinfo flag, the sysfs knob)
lives in agent/kernel (issue 16 §1/§5); this module only needs the version and the sysctl.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Era = Literal["none", "per_task", "misery", "mitigate_on", "stuck_off", "mitigate_off", "unknown"]
ERAS: tuple[Era, ...] = ("none", "per_task", "misery", "mitigate_on", "stuck_off", "mitigate_off", "unknown")

DETECTION_SINCE = (5, 7)  # split_lock_detect= (commit 6650cdd9a8cc)
MISERY_SINCE = (5, 19)  # split_lock_warn()'s 10 ms sleep + semaphore (commit b041b525dab9)
SYSCTL_SINCE = (6, 2)  # split_lock_mitigate (commit 727209376f49; backported to 6.1.y)
STUCK_OFF_FIXED = (6, 15)  # "x86/split_lock: Fix the delayed detection logic" (c929d08df8be)

# The sleep each trap costs in misery mode: split_lock_warn() -> msleep_interruptible(10).
MISERY_SLEEP_MS = 10

_RELEASE = re.compile(r"\s*(\d+)\.(\d+)(?:\.(\d+))?(\S*)")
# Distribution kernels known to carry split-lock code the version number does not show.
_BACKPORTING = (("rhel", re.compile(r"\.el\d+")),)
_DISTROS = (
    *_BACKPORTING,
    ("proxmox", re.compile(r"-pve\b")),
    ("debian", re.compile(r"-(?:cloud-|rt-)?amd64\b")),
    ("ubuntu", re.compile(r"-(?:generic|lowlatency|aws|azure|gcp|kvm|oracle)\b")),
)


@dataclass(frozen=True, slots=True)
class Release:
    """A kernel release: `6.1.0-18-amd64` -> 6.1.0, suffix `-18-amd64`, distro `debian`."""

    major: int
    minor: int
    patch: int | None
    suffix: str
    distro: str | None

    @property
    def version(self) -> tuple[int, int]:
        return self.major, self.minor


def parse_release(text: str) -> Release | None:
    """The release as /proc/sys/kernel/osrelease prints it, or None when it does not start with
    MAJOR.MINOR. The patch of a distribution string is not the stable release (Debian's
    6.1.0-18-amd64 is 6.1.76), so nothing below decides on it."""
    match = _RELEASE.match(text)
    if match is None:
        return None
    suffix = match.group(4)
    distro = next((name for name, pattern in _DISTROS if pattern.search(suffix)), None)
    patch = match.group(3)
    return Release(int(match.group(1)), int(match.group(2)), int(patch) if patch else None, suffix, distro)


@dataclass(frozen=True, slots=True)
class KernelEra:
    era: Era
    # split_lock_warn() sleeps 10 ms per trap in warn mode: True, False, or None (unknown).
    misery: bool | None
    counts_are_floors: bool  # 5.7-5.18: per-task off hides every trap after a task's first
    stuck_off: bool  # mitigate=0 before the v6.15 fix: cores can stay off after racing traps
    reason: str


def kernel_era(kernel: str, mitigate: int | None) -> KernelEra:
    """The era of `kernel` (a release string) given the `split_lock_mitigate` the agent read."""
    release = parse_release(kernel)
    if release is None:
        return KernelEra("unknown", None, False, False, f"kernel release {kernel[:64]!r} does not parse")
    version = release.version
    backporter = release.distro in {name for name, _ in _BACKPORTING}
    if version < MISERY_SINCE and (backporter or mitigate is not None):
        evidence = (
            f"split_lock_mitigate={mitigate} was read, which {kernel} does not have upstream"
            if mitigate is not None
            else f"{kernel} is a {release.distro} kernel that carries backported split-lock code"
        )
        return KernelEra("unknown", None, False, False, f"era unknown from version: {evidence}")
    if version < DETECTION_SINCE:
        return KernelEra("none", False, False, False, f"{kernel} predates split-lock detection (5.7)")
    if version < MISERY_SINCE:
        return KernelEra(
            "per_task",
            False,
            True,
            False,
            f"{kernel} (5.7-5.18): a task runs with detection off after its first trap, "
            "so its later split locks are not counted",
        )
    if mitigate is None:
        if version < SYSCTL_SINCE:
            return KernelEra(
                "misery", True, False, False, f"{kernel} (5.19-6.1 without the sysctl): misery mode always on"
            )
        return KernelEra(
            "mitigate_on",
            True,
            False,
            False,
            f"{kernel}: split_lock_mitigate not read; the kernel default (1, misery mode) assumed",
        )
    if mitigate == 1:
        return KernelEra("mitigate_on", True, False, False, f"{kernel}: split_lock_mitigate=1, misery mode")
    if mitigate == 0 and version < STUCK_OFF_FIXED:
        return KernelEra(
            "stuck_off",
            False,
            False,
            True,
            f"{kernel}: split_lock_mitigate=0 before the v6.15 fix: a core whose trap races another's "
            "can stay off (unless this stable tree carries c929d08df8be)",
        )
    if mitigate == 0:
        return KernelEra(
            "mitigate_off", False, False, False, f"{kernel}: split_lock_mitigate=0, warnings only"
        )
    return KernelEra("unknown", None, False, False, f"split_lock_mitigate={mitigate} is not 0 or 1")


def misery_in_force(kernel: str, mode: str | None, mitigate: int | None) -> bool | None:
    """Whether each split-lock trap cost its thread a 10 ms sleep under this state.

    Only warn mode runs split_lock_warn(); fatal kills, off and ratelimit:N never trap #AC.
    None: the era is unknown, so no figure can be claimed either way.
    """
    if mode != "warn":
        return False
    return kernel_era(kernel, mitigate).misery
