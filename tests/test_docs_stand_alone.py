"""Nothing in the repository cites a document outside it (#17).

The team's design and style notes were never shipped: a user or integrator who reads "exactly as
<that note> §3" has nowhere to look. The facts live in docs/ (kernel.md for the
kernel, api.md for the contracts, agent.md for the agent). Every file git tracks is read,
this one excepted.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = ("DESIGN" + ".md", "STYLE" + ".md")  # split, so this file does not name them itself


def test_no_tracked_file_cites_design_md_or_style_md() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout.split("\0")
    found = []
    for name in filter(None, tracked):
        if name == "tests/test_docs_stand_alone.py":
            continue  # names them to look for them
        path = ROOT / name
        if not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        for number, line in enumerate(text.splitlines(), 1):
            if any(doc in line for doc in OUTSIDE):
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not found, "cite the in-repo doc instead:\n" + "\n".join(found)
