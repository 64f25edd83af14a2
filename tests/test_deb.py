"""scripts/build-deb: the agent as a Debian package, checked the way an admin would before
installing it, with `dpkg-deb --info` and `--contents` (issue 17)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.fakehost import FakeHost
from tests.agent.test_service_unit import parse_unit
from tests.conftest import require

REPO = Path(__file__).resolve().parents[1]


def dpkg_deb() -> str:
    path = shutil.which("dpkg-deb")
    require(path is not None, "no dpkg-deb: apt-get install dpkg")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dpkg_deb()
    out = tmp_path_factory.mktemp("dist")
    build = [str(REPO / "scripts" / "build-deb"), str(out)]
    subprocess.run(build, check=True, capture_output=True, timeout=180)
    (found,) = out.glob("*.deb")
    return found


def run(*args: str) -> str:
    return subprocess.run([dpkg_deb(), *args], check=True, capture_output=True, text=True, timeout=60).stdout


def test_the_package_is_named_versioned_and_needs_only_python3_3_9(deb: Path) -> None:
    version = re.search(r'__version__ = "(.+)"', (REPO / "agent" / "__init__.py").read_text())
    assert version is not None
    assert deb.name == f"splitwatch-agent_{version[1]}_all.deb"
    info = run("--info", str(deb))
    fields = dict(re.findall(r"^ ([A-Z][\w-]+): (.*)$", info, re.MULTILINE))
    assert fields["Package"] == "splitwatch-agent"
    assert fields["Version"] == version[1]
    assert fields["Architecture"] == "all"
    assert fields["Depends"] == "python3 (>= 3.9)"
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(rf"^ +\d+ bytes, +\d+ lines +\* +{script} +#!/bin/sh$", info, re.MULTILINE), script


def test_the_contents_are_the_zipapp_wrapper_unit_user_udev_rule_and_module(deb: Path) -> None:
    listing = run("--contents", str(deb))
    files = {}
    for line in listing.splitlines():
        perms, owner, _size, _date, _time, path = line.split(maxsplit=5)
        if not perms.startswith("d"):
            files[path.removeprefix(".")] = (perms, owner)
    assert files == {
        "/usr/lib/splitwatch/splitwatch-agent.pyz": ("-rw-r--r--", "root/root"),
        "/usr/bin/splitwatch-agent": ("-rwxr-xr-x", "root/root"),
        "/lib/systemd/system/splitwatch-agent.service": ("-rw-r--r--", "root/root"),
        "/usr/lib/sysusers.d/splitwatch-agent.conf": ("-rw-r--r--", "root/root"),
        "/lib/udev/rules.d/60-splitwatch-msr.rules": ("-rw-r--r--", "root/root"),
        "/usr/lib/modules-load.d/splitwatch-msr.conf": ("-rw-r--r--", "root/root"),
        "/usr/share/doc/splitwatch-agent/agent.env.example": ("-rw-r--r--", "root/root"),
    }
    assert "/etc/" not in listing  # the settings (and the token) are the admin's, never shipped


def test_the_unpacked_package_runs_the_agent_and_its_unit_runs_the_packaged_wrapper(
    deb: Path, tmp_path: Path
) -> None:
    root = tmp_path / "unpacked"
    run("-x", str(deb), str(root))
    unit = parse_unit((root / "lib/systemd/system/splitwatch-agent.service").read_text())["Service"]
    assert shlex.split(unit["ExecStart"][0])[0] == "/usr/bin/splitwatch-agent"
    assert set(unit["AmbientCapabilities"][0].split()) == {"CAP_SYS_RAWIO", "CAP_SYSLOG"}
    wrapper = (root / "usr/bin/splitwatch-agent").read_text().splitlines()[-1]
    packaged = "/usr/lib/splitwatch/splitwatch-agent.pyz"
    assert shlex.split(wrapper) == ["exec", "/usr/bin/python3", packaged, "$@"]

    host = FakeHost(tmp_path / "host").cpus(2).boot_messages()
    host.split_lock("java", 100)
    pyz = root / "usr/lib/splitwatch/splitwatch-agent.pyz"
    argv = [sys.executable, "-I", "-S", str(pyz), "--root", str(host.root), "--once", "--stdout"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"comm":"java"' in result.stdout


def test_the_maintainer_scripts_are_valid_sh_and_postinst_creates_the_user(deb: Path, tmp_path: Path) -> None:
    control = tmp_path / "control"
    run("-e", str(deb), str(control))
    for script in ("postinst", "prerm", "postrm"):
        subprocess.run(["sh", "-n", str(control / script)], check=True, timeout=30)
    postinst = (control / "postinst").read_text()
    assert "systemd-sysusers /usr/lib/sysusers.d/splitwatch-agent.conf" in postinst
    assert "adduser --system --group" in postinst  # where systemd-sysusers is absent
