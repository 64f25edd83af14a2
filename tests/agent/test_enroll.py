"""agent/enroll.py without a backend (#15): the host's identity comes from under --root, the
token file is 0600, and a bad enrollment token file is a sentence, not a traceback."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.enroll import EnrollError, load_token, read_enroll_token, read_identity, store_token, token_path
from agent.errors import ConfigError
from agent.fakehost import FakeHost
from agent.host import HostRoot


def test_identity_is_the_fake_hosts_hostname_boot_id_and_machine_id(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, hostname="kvm-42", boot_id="3d1c2b6a-8e0f-4a57-9c1e-2f3a4b5c6d7e")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/machine-id").write_text("4f2a9c0e1b3d4e5f8a7b6c5d4e3f2a1b\n")
    identity = read_identity(HostRoot(host.root))
    assert (identity.host, identity.boot_id, identity.machine_id) == (
        "kvm-42", "3d1c2b6a-8e0f-4a57-9c1e-2f3a4b5c6d7e", "4f2a9c0e1b3d4e5f8a7b6c5d4e3f2a1b",
    )  # fmt: skip


@pytest.mark.parametrize("content", [None, "uninitialized\n", "", "not-a-machine-id\n"])
def test_missing_or_uninitialised_machine_id_is_sent_as_none(tmp_path: Path, content: str | None) -> None:
    FakeHost(tmp_path, hostname="kvm-1")
    if content is not None:
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc/machine-id").write_text(content)
    assert read_identity(HostRoot(tmp_path)).machine_id is None


def test_root_without_proc_is_a_sentence_naming_the_root(tmp_path: Path) -> None:
    with pytest.raises(EnrollError, match="--root"):
        read_identity(HostRoot(tmp_path))


def test_stored_token_is_0600_and_read_back(tmp_path: Path) -> None:
    path = token_path(tmp_path / "state")
    store_token(path, "sw_abc")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_token(path) == "sw_abc"
    assert load_token(tmp_path / "nothing-here") is None


def test_a_token_file_readable_by_others_is_made_0600(tmp_path: Path) -> None:
    path = tmp_path / "agent-token"
    path.write_text("sw_abc\n")
    path.chmod(0o644)
    assert load_token(path) == "sw_abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_empty_or_missing_enrollment_token_file_is_a_config_error_with_the_remedy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the enrollment token file"):
        read_enroll_token(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_enroll_token(tmp_path / "empty")
