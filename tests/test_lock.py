"""requirements.lock (scripts/lock): what a fresh machine installs is what the suite runs on
(issue 17). Checked offline: the lock covers pyproject.toml, agrees with its ranges, carries the
hashes pip checks, and this very environment holds exactly its versions."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def locked() -> dict[str, tuple[str, str | None, list[str]]]:
    """name -> (version, marker, hashes)."""
    pins: dict[str, tuple[str, str | None, list[str]]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match[1])
            pins[current] = (match[2], match[3], [])
        elif line.strip().startswith("--hash=sha256:") and current is not None:
            pins[current][2].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in [*project["dependencies"], *extras["server"], *extras["dev"]]]


def test_every_declared_dependency_is_pinned_within_its_range_with_hashes() -> None:
    pins = locked()
    assert len(pins) > 20
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: run scripts/lock"
        version, _marker, _hashes = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside pyproject.toml's {requirement}: "
            "run scripts/lock"
        )
    for name, (_version, _marker, hashes) in pins.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), f"{name} has no hashes"


def test_this_environment_runs_exactly_the_locked_versions() -> None:
    """scripts/_venv.sh installs the lock; a venv that drifted from it tests something else."""
    drift = []
    for name, (version, marker, _hashes) in sorted(locked().items()):
        if marker is not None and not Marker(marker).evaluate():
            continue  # not for this platform (e.g. colorama on Windows)
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            drift.append(f"{name}: locked {version}, installed {installed}")
    assert not drift, "the environment is not the lock (rerun scripts/_venv.sh):\n" + "\n".join(drift)


def test_the_venv_script_installs_the_lock_with_hashes_and_only_splitwatch_on_top() -> None:
    script = (ROOT / "scripts" / "_venv.sh").read_text()
    assert "--require-hashes -r requirements.lock" in script
    assert "--no-deps -e ." in script
