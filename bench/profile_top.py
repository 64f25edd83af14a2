"""The top lines of a py-spy profile: where a busy server spends its CPU.

Reads py-spy's raw (folded) output, `frame;frame;...;frame count` per line, as written by
`bench/bench_fleet.py --profile DIR`, and prints each thread's share of the busy samples and the
functions with the largest inclusive share (a function counted once per sample, however deep it
recurs). Samples whose innermost frame is a wait (epoll, a queue, a lock, a socket read) are not
busy and are dropped, so the shares are of CPU, not of wall time.

Run: .venv/bin/python bench/profile_top.py DIR/sqlite.txt [--top 25] [--match app/]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

IDLE = re.compile(
    r"\b(select|poll|epoll|wait|_wait_for_tstate_lock|get|accept|recv|recv_into|sleep|"
    r"run_forever|_run_once|read)\b \("
)
FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def frames(stack: str) -> list[str]:
    out = []
    for raw in stack.split(";"):
        m = FRAME.match(raw.strip())
        if m is None:
            out.append(raw.strip())
            continue
        file = m["file"]
        for marker in ("site-packages/", "/app/", "/agent/", "lib/python3"):
            if marker in file:
                file = file[file.index(marker) + (len(marker) if marker == "site-packages/" else 1) :]
                break
        out.append(f"{m['func']} ({file})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only functions whose file contains this")
    parser.add_argument("--thread", default="", help="only samples of threads whose name contains this")
    args = parser.parse_args()
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count_ = line.rpartition(" ")
        if not count_.isdigit():
            continue
        count = int(count_)
        parts = stack.split(";")
        if IDLE.search(parts[-1]) and "sqlite" not in parts[-1]:
            continue
        if args.thread and args.thread not in parts[1 if parts[0].startswith("process ") else 0]:
            continue
        busy += count
        # py-spy --subprocesses --threads: "process PID:cmd;thread (TID): name;frames..."
        head = 2 if parts[0].startswith("process ") else 1
        threads[re.sub(r"\(\d+\)|0x[0-9a-f]+", "", parts[head - 1]).strip()] += count
        for f in set(frames(";".join(parts[head:]))):
            if args.match in f:
                inclusive[f] += count
    if not busy:
        raise SystemExit("no busy samples")
    print(f"{busy} busy samples")
    for t, c in threads.most_common(8):
        print(f"  {100 * c / busy:5.1f}%  {t}")
    print("inclusive:")
    for f, c in inclusive.most_common(args.top):
        print(f"  {100 * c / busy:5.1f}%  {f}")


if __name__ == "__main__":
    main()
