"""The agent's persisted cursor file: survives restarts, never crashes the agent when damaged."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from agent.state import STATE_FILE, STATE_VERSION, AgentState, load_state, save_state


def test_first_run_without_a_state_file_starts_fresh_without_warning(tmp_path: Path) -> None:
    state, warning = load_state(tmp_path / "absent")
    assert state == AgentState()
    assert warning is None


def test_saved_state_is_loaded_back_by_the_next_agent(tmp_path: Path) -> None:
    saved = AgentState(
        boot_id="6e3f1b1c-0000-4000-8000-000000000001",
        kmsg_next_seq=1234,
        tracefs_next_seq=56,
        guest_cache={"4242": {"name": "web-1", "vmm": "qemu"}},
    )
    save_state(tmp_path / "state", saved)
    loaded, warning = load_state(tmp_path / "state")
    assert loaded == saved
    assert warning is None


def test_state_file_is_written_as_a_versioned_json_object_readable_only_by_the_agent(
    tmp_path: Path,
) -> None:
    save_state(tmp_path, AgentState(boot_id="b", kmsg_next_seq=7))
    path = tmp_path / STATE_FILE
    data = json.loads(path.read_text())
    assert data["version"] == STATE_VERSION
    assert data["kmsg_next_seq"] == 7
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]  # no temporary file left


def test_corrupt_state_file_starts_from_the_beginning_of_the_log_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text('{"version": 1, "boot_id": "b", "kmsg_next')
    state, warning = load_state(tmp_path)
    assert state == AgentState()
    assert warning is not None
    assert str(tmp_path / STATE_FILE) in warning
    assert "beginning of the current boot" in warning
    assert "drops events it already has" in warning


def test_state_file_of_an_unknown_version_is_discarded_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({"version": 99, "boot_id": "b", "kmsg_next_seq": 5}))
    state, warning = load_state(tmp_path)
    assert state == AgentState()
    assert warning is not None and "version 99" in warning


def test_state_with_wrongly_typed_fields_is_discarded_with_a_warning(tmp_path: Path) -> None:
    for bad in (
        {"kmsg_next_seq": "12"},
        {"kmsg_next_seq": -1},
        {"kmsg_next_seq": True},
        {"boot_id": 5},
        {"tracefs_next_seq": None},
        {"guest_cache": []},
    ):
        body = {"version": STATE_VERSION, "boot_id": "b", "kmsg_next_seq": 3, **bad}
        (tmp_path / STATE_FILE).write_text(json.dumps(body))
        state, warning = load_state(tmp_path)
        assert state == AgentState(), bad
        assert warning is not None, bad


def test_state_file_that_is_not_utf8_or_not_an_object_is_discarded_with_a_warning(tmp_path: Path) -> None:
    for raw in (b"\xff\xfe\x00garbage", b"[1, 2, 3]", b""):
        (tmp_path / STATE_FILE).write_bytes(raw)
        state, warning = load_state(tmp_path)
        assert state == AgentState()
        assert warning is not None


def test_crash_before_the_rename_leaves_the_previous_state_intact(tmp_path: Path) -> None:
    save_state(tmp_path, AgentState(boot_id="b", kmsg_next_seq=10))
    # A crash after writing the temporary file but before the rename: a half-written tmp file.
    (tmp_path / (STATE_FILE + ".tmp")).write_text('{"version": 1, "kmsg_next_s')
    state, warning = load_state(tmp_path)
    assert state.kmsg_next_seq == 10
    assert warning is None
    save_state(tmp_path, AgentState(boot_id="b", kmsg_next_seq=11))  # the next save replaces it
    assert load_state(tmp_path)[0].kmsg_next_seq == 11
