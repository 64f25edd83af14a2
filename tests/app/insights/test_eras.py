"""Kernel eras from the release and split_lock_mitigate: one row per era the kernel has had.

Versions are the kernel's (5.7 detection, 5.19 misery, 6.2 sysctl, v6.15 the delayed-detection
fix), written here as literals, not imported from the code under test.
"""

from __future__ import annotations

import pytest

from app.insights.eras import kernel_era, misery_in_force, parse_release

# (release, split_lock_mitigate as read, era, misery mode on in warn, counts floors, stuck off)
ERA_TABLE = [
    ("5.4.0-150-generic", None, "none", False, False, False),
    ("5.10.0-28-amd64", None, "per_task", False, True, False),
    ("5.15.0-91-generic", None, "per_task", False, True, False),
    ("5.19.0-50-generic", None, "misery", True, False, False),
    ("6.1.0", None, "misery", True, False, False),  # 6.1.0/6.1.1: misery, no sysctl yet
    ("6.1.0-18-amd64", 1, "mitigate_on", True, False, False),  # 6.1.y with the backported sysctl
    ("6.1.0-18-amd64", 0, "stuck_off", False, False, True),
    ("6.6.30", 1, "mitigate_on", True, False, False),
    ("6.6.30", 0, "stuck_off", False, False, True),
    ("6.8.12-4-pve", 0, "stuck_off", False, False, True),
    ("6.14.2", 0, "stuck_off", False, False, True),
    ("6.15.0", 0, "mitigate_off", False, False, False),
    ("6.15.0", 1, "mitigate_on", True, False, False),
    ("6.19.1-arch1-1", 0, "mitigate_off", False, False, False),
    ("6.8.0-51-generic", None, "mitigate_on", True, False, False),  # sysctl unread: default 1
]


@pytest.mark.parametrize(("release", "mitigate", "era", "misery", "floors", "stuck"), ERA_TABLE)
def test_era_of_each_kernel_generation(
    release: str, mitigate: int | None, era: str, misery: bool, floors: bool, stuck: bool
) -> None:
    got = kernel_era(release, mitigate)
    assert (got.era, got.misery, got.counts_are_floors, got.stuck_off) == (era, misery, floors, stuck)
    assert release in got.reason


def test_rhel_8_kernel_below_5_7_is_era_unknown_from_version_not_none() -> None:
    got = kernel_era("4.18.0-394.el8.x86_64", None)
    assert got.era == "unknown" and got.misery is None
    assert got.reason.startswith("era unknown from version")


def test_a_mitigate_value_read_on_a_5_15_kernel_is_evidence_of_a_backport() -> None:
    got = kernel_era("5.15.0-91-generic", 1)
    assert got.era == "unknown" and "split_lock_mitigate=1 was read" in got.reason


def test_a_release_that_does_not_parse_is_unknown_not_an_error() -> None:
    assert kernel_era("garbage", None).era == "unknown"
    assert kernel_era("", 1).era == "unknown"


@pytest.mark.parametrize(
    ("text", "major", "minor", "patch", "distro"),
    [
        ("4.18.0-394.el8.x86_64", 4, 18, 0, "rhel"),
        ("6.1.0-18-amd64", 6, 1, 0, "debian"),
        ("6.8.12-4-pve", 6, 8, 12, "proxmox"),
        ("6.8.0-51-generic", 6, 8, 0, "ubuntu"),
        ("6.15", 6, 15, None, None),
        ("5.10.0-28-cloud-amd64", 5, 10, 0, "debian"),
    ],
)
def test_distribution_release_strings_parse(
    text: str, major: int, minor: int, patch: int | None, distro: str | None
) -> None:
    release = parse_release(text)
    assert release is not None
    assert (release.major, release.minor, release.patch, release.distro) == (major, minor, patch, distro)


def test_misery_is_only_ever_in_warn_mode() -> None:
    assert misery_in_force("6.6.30", "warn", 1) is True
    for mode in ("fatal", "off", "ratelimit", None):
        assert misery_in_force("6.6.30", mode, 1) is False
    assert misery_in_force("4.18.0-394.el8", "warn", None) is None
