"""Agent footprint on a 64-CPU host at a 10 s interval (docs/benchmarks.md, issue 4).

A real agent process (agent.loop.run, the code `splitwatch agent` runs) watches a fake 64-CPU
host with four QEMU guests and a tracefs, while this script keeps the host busy: a few
split-lock traps and kprobe hits per second, a suppressed line now and then. The agent sends to a
small HTTP sink in this process that answers 200, so only the agent's own cost is measured.

Measured, after a warm-up pass (imports and the first full read are start-up, not steady state):
  - RSS: the agent's VmRSS (peak over the run, from /proc/PID/status), against the same-run
    baseline of an idle `python -c` interpreter's RSS. Bar: < 30 MB.
  - CPU: utime + stime of the agent (/proc/PID/stat) over the measured passes, as % of one
    core over the wall time, and seconds per pass. Bar: < 1% of a core.

Entries: `loop` (agent.loop.run in a bare interpreter), `cli` (the `splitwatch agent` command of
the installed package), `pyz` (the zipapp of scripts/build-agent, as hosts run it; `--python`
picks the interpreter, e.g. a 3.9). `--tree DIR` runs `loop` from another checkout (e.g. an older
commit's `git archive`) for a before/after in one run.

Run: .venv/bin/python bench/bench_agent.py [--passes N] [--interval S] [--cpus N] [--entry E]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.fakehost import FakeHost  # noqa: E402

LAUNCHER = """
import json, sys
from pathlib import Path
from agent.config import AgentConfig
from agent.loop import run
cfg = json.loads(sys.argv[1])
for key in ("root", "spool_dir", "state_dir"):
    cfg[key] = Path(cfg[key])
sys.exit(run(AgentConfig(**cfg)))
"""
RSS_BAR_MB = 30.0
CPU_BAR_PCT = 1.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def idle_python_rss_mb(python: str = sys.executable) -> float:
    proc = subprocess.Popen([python, "-c", "import time; time.sleep(3)"])
    try:
        time.sleep(1.0)
        return rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()


class Sink(BaseHTTPRequestHandler):
    posts = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Sink.posts += 1
        body = b'{"accepted": 0, "duplicates": 0}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def busy_host(host: FakeHost, stop: threading.Event) -> None:
    """A few traps per second, as a noisy but realistic host produces."""
    vms = [host.qemu(f"vm-{i}", pid=5000 + 100 * i, vcpus=4) for i in range(4)]
    n = 0
    while not stop.wait(0.25):
        vm = vms[n % len(vms)]
        cpu = n % 4
        host.split_lock(vm.vcpu_comm(cpu), vm.vcpu_tids[cpu])
        host.trace_hit("handle_guest_split_lock", vm.vcpu_comm(cpu), vm.vcpu_tids[cpu], cpu=n % 64)
        if n % 40 == 39:
            host.suppressed(7)
        n += 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passes", type=int, default=6, help="measured passes after the warm-up one")
    parser.add_argument("--interval", type=float, default=10.0, help="agent interval in seconds")
    parser.add_argument("--cpus", type=int, default=64, help="CPUs of the fake host")
    parser.add_argument(
        "--entry",
        choices=("loop", "cli", "pyz"),
        default="loop",
        help="loop: agent.loop.run in a bare interpreter; cli: the `splitwatch agent` command; "
        "pyz: the zipapp (scripts/build-agent)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for --entry pyz and loop")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose agent/ --entry loop runs")
    args = parser.parse_args()

    baseline = idle_python_rss_mb(args.python)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        base = Path(tmp)
        host = FakeHost(base / "host", live=True).cpus(args.cpus).mode("warn").tracefs().boot_messages()
        stop = threading.Event()
        writer = threading.Thread(target=busy_host, args=(host, stop), daemon=True)
        writer.start()
        cfg = {
            "server": f"http://127.0.0.1:{httpd.server_address[1]}",
            "token": "bench",
            "root": str(host.root),
            "spool_dir": str(base / "spool"),
            "state_dir": str(base / "state"),
            "interval_s": args.interval,
            "use_tracefs": True,
            "max_passes": args.passes + 1,
        }
        options = [
            "--server", cfg["server"], "--token", "bench", "--root", cfg["root"],
            "--interval", str(args.interval), "--spool", cfg["spool_dir"], "--state-dir", cfg["state_dir"],
        ]  # fmt: skip
        if args.entry == "cli":
            command = [str(Path(sys.executable).parent / "splitwatch"), "agent", *options]
        elif args.entry == "pyz":
            pyz = base / "splitwatch-agent.pyz"
            subprocess.run([str(ROOT / "scripts" / "build-agent"), str(pyz)], check=True, capture_output=True)
            command = [args.python, "-I", "-S", str(pyz), *options]
        else:
            command = [args.python, "-c", LAUNCHER, json.dumps(cfg)]
        proc = subprocess.Popen(command, cwd=args.tree, stderr=subprocess.PIPE, text=True)
        # Warm-up: the first pass (imports, first full read) ends about when the first POST lands.
        while Sink.posts == 0 and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)
        cpu0, wall0 = cpu_s(proc.pid), time.monotonic()
        peak = rss_mb(proc.pid)
        cpu1, wall1 = cpu0, wall0
        while proc.poll() is None:
            try:
                peak = max(peak, rss_mb(proc.pid))
                cpu1, wall1 = cpu_s(proc.pid), time.monotonic()
            except (FileNotFoundError, ProcessLookupError, RuntimeError):
                break
            if args.entry != "loop" and Sink.posts > args.passes:
                proc.send_signal(signal.SIGTERM)  # the command has no pass limit: stop it as systemd does
                break
            time.sleep(0.2)
        _, stderr = proc.communicate()
        stop.set()
        writer.join()
    httpd.shutdown()
    if proc.returncode != 0:
        print(stderr, file=sys.stderr)
        raise SystemExit(f"agent exited {proc.returncode}")

    wall = wall1 - wall0
    cpu = cpu1 - cpu0
    pct = 100 * cpu / wall if wall > 0 else float("nan")
    print(
        f"entry {args.entry} ({args.python}, {args.tree}); fake host: {args.cpus} CPUs, 4 guests, tracefs; "
        f"interval {args.interval:g} s, {args.passes} passes"
    )
    print(f"idle python interpreter RSS (baseline): {baseline:6.1f} MB")
    print(
        f"agent peak RSS                        : {peak:6.1f} MB  ({peak / baseline:.2f}x baseline, "
        f"+{peak - baseline:.1f} MB)  bar < {RSS_BAR_MB:g} MB: {'ok' if peak < RSS_BAR_MB else 'FAIL'}"
    )
    print(
        f"agent CPU                             : {pct:6.3f} % of a core ({cpu / max(args.passes, 1):.3f} s "
        f"per pass over {wall:.0f} s)  bar < {CPU_BAR_PCT:g}%: {'ok' if pct < CPU_BAR_PCT else 'FAIL'}"
    )
    print(f"POSTs received: {Sink.posts}")


if __name__ == "__main__":
    main()
