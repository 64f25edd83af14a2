"""The agent's persisted position: `state_dir/state.json`, one small versioned JSON file.

What it holds, per boot (`boot_id`): the kmsg cursor (the SEQ of the next record to read), the
tracefs event counter (tracefs hits have no SEQ of their own, so the agent numbers them; ingest
dedups on `(host, boot_id, source, seq)`), the consistency memory (agent/evidence.py: the boot
line, recent samples, offenders, issue 16), and the guest cache (VMM processes seen alive, so a
guest killed by its SIGBUS is still attributed after an agent restart).

Guarantees:
- `save_state` is atomic and durable: write `state.json.tmp`, fsync it, rename over `state.json`,
  fsync the directory. A crash at any step leaves either the old file or the new one, never a mix.
- `load_state` never raises on a bad file. Missing → a fresh state (first run). Unreadable, not
  JSON, wrong shape or an unknown version → a fresh state plus a warning sentence: the agent then
  reads the current boot's log from its beginning again, which is harmless because the backend
  drops what it already has (ingest is idempotent).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_VERSION = 1
STATE_FILE = "state.json"


@dataclass(frozen=True)
class AgentState:
    boot_id: str | None = None  # the boot the positions below belong to
    kmsg_next_seq: int | None = None  # None: read the log from its beginning
    tracefs_next_seq: int = 0
    guest_cache: dict[str, Any] = field(default_factory=dict)
    consistency: dict[str, Any] = field(default_factory=dict)  # agent/evidence.py, this boot's

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "boot_id": self.boot_id,
            "kmsg_next_seq": self.kmsg_next_seq,
            "tracefs_next_seq": self.tracefs_next_seq,
            "guest_cache": self.guest_cache,
            "consistency": self.consistency,
        }


class StateFormatError(ValueError):
    """The state file is JSON but not a state this agent wrote."""


def parse_state(text: str) -> AgentState:
    """A state file's text → AgentState; `ValueError` (JSON or shape) when it is not one."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise StateFormatError("not a JSON object")
    version = data.get("version")
    if version != STATE_VERSION:
        raise StateFormatError(f"version {version!r}, this agent writes version {STATE_VERSION}")
    boot_id = data.get("boot_id")
    next_seq = data.get("kmsg_next_seq")
    tracefs_seq = data.get("tracefs_next_seq", 0)
    cache = data.get("guest_cache", {})
    if boot_id is not None and not isinstance(boot_id, str):
        raise StateFormatError("boot_id is not a string")
    # bool is an int in Python: a `true` SEQ is as corrupt as a string one.
    if next_seq is not None and (not isinstance(next_seq, int) or isinstance(next_seq, bool) or next_seq < 0):
        raise StateFormatError("kmsg_next_seq is not a non-negative integer")
    if not isinstance(tracefs_seq, int) or isinstance(tracefs_seq, bool) or tracefs_seq < 0:
        raise StateFormatError("tracefs_next_seq is not a non-negative integer")
    if not isinstance(cache, dict):
        raise StateFormatError("guest_cache is not an object")
    memory = data.get("consistency", {})
    # Optional (older agents wrote none) and advisory: a bad one is dropped, not the whole state.
    return AgentState(boot_id, next_seq, tracefs_seq, cache, memory if isinstance(memory, dict) else {})


def load_state(state_dir: Path) -> tuple[AgentState, str | None]:
    """The persisted state and, when it had to be discarded, a warning sentence saying why."""
    path = state_dir / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return AgentState(), None
    except (OSError, UnicodeDecodeError) as exc:
        return AgentState(), _discarded(path, f"unreadable: {exc}")
    try:
        return parse_state(text), None
    except ValueError as exc:  # json.JSONDecodeError and StateFormatError are both ValueErrors
        return AgentState(), _discarded(path, str(exc))


def _discarded(path: Path, cause: str) -> str:
    return (
        f"agent state {path} is corrupt ({cause}): starting from the beginning of the current boot's "
        "kernel log; the backend drops events it already has"
    )


def save_state(state_dir: Path, state: AgentState) -> None:
    """Write `state` atomically and durably (tmp + fsync + rename + fsync dir); raises OSError."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = state_dir / (STATE_FILE + ".tmp")
    data = json.dumps(state.to_dict(), separators=(",", ":"), sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    # The rename is durable only once the directory entry is: fsync the directory too.
    dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
