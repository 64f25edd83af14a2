"""HostRoot: every path the agent touches, under one root directory (`--root`, default `/`).

Nothing else in the agent opens files. The root is a value, never a constant, so a test or the
simulator hands in a fake host laid out like `/` (agent/fakehost.py) and the same code runs.

Methods raise `OSError` as the OS gives it (ENOENT, EACCES/EPERM, EIO, ...): the sources catch
it narrowly and turn it into an absent / denied / failed outcome. Relative paths only, and never
out of the root: a hostile `..` is a programming error here, not input.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostRoot:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> HostRoot:
        return cls(Path(root))

    def path(self, rel: str) -> Path:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"host path must be relative and inside the root: {rel!r}")
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def read_text(self, rel: str) -> str:
        # proc files are small; surrogateescape keeps odd bytes of a COMM instead of failing.
        return self.path(rel).read_bytes().decode("utf-8", "surrogateescape")

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def listdir(self, rel: str) -> list[str]:
        return os.listdir(self.path(rel))

    def stat(self, rel: str) -> os.stat_result:
        return os.stat(self.path(rel))

    def is_char_device(self, rel: str) -> bool:
        try:
            return stat.S_ISCHR(self.stat(rel).st_mode)
        except OSError:
            return False

    def open_fd(self, rel: str, flags: int) -> int:
        return os.open(self.path(rel), flags | os.O_CLOEXEC)

    @contextmanager
    def opened(self, rel: str, flags: int = os.O_RDONLY) -> Iterator[int]:
        fd = self.open_fd(rel, flags)
        try:
            yield fd
        finally:
            os.close(fd)

    def write_text(self, rel: str, text: str, *, append: bool = True) -> None:
        # tracefs control files (kprobe_events, enable) take one write per command.
        flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
        with self.opened(rel, flags) as fd:
            os.write(fd, text.encode())

    def msr_cpus(self) -> list[int]:
        """CPU numbers that have a `dev/cpu/N/msr` entry, ascending."""
        return sorted(
            int(n) for n in self.listdir("dev/cpu") if n.isdigit() and self.exists(f"dev/cpu/{n}/msr")
        )

    def pread_msr(self, cpu: int, index: int) -> int:
        """One MSR as a little-endian u64: `pread(fd, 8, offset=index)` on dev/cpu/N/msr.

        The msr driver answers EIO for an MSR the CPU lacks; a fake host's sparse file that
        ends before `index` gives a short read, which is the same fact and raises EIO too.
        """
        with self.opened(f"dev/cpu/{cpu}/msr") as fd:
            data = os.pread(fd, 8, index)
        if len(data) != 8:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(self.path(f"dev/cpu/{cpu}/msr")))
        return int.from_bytes(data, "little")
