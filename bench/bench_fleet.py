"""Steady-state fleet capacity of `splitwatch serve` (issue 13): how many hosts one box serves.

The payload is what a real agent sends every 10 s in steady state: `splitwatch agent --once
--stdout` on a fake 32-CPU KVM host with tracefs and a guest causing a few split locks (4 events,
32 CPU states, ~3.9 KB; printed below). 16 concurrent senders (keep-alive HTTP/1.1 connections
from one asyncio client, so the client costs little CPU) cycle over 400 hosts, each host with its
own agent token, its own guest (the payload's guest renamed per host) and its own advancing
SEQs, times and state sample, so every request stores new events, as in production. By default
one request of 12 per host carries the full state and the others `state: null` (1.1 KB): what
the agent sends at its default 10 s interval, whose state refresh (agent/state_refresh.py) sends
an unchanged state every 120 s only. `--state-every 1` sends the full state in every request,
the payload of the issue's first table: a fleet whose agents predate the refresh.

Rows, all measured in this one run:
  bare      a Starlette app on the same uvicorn that only json-decodes the body and answers
            {"accepted": n, "duplicates": 0}: the HTTP stack's own limit on this machine
  sqlite    `splitwatch serve` on a SQLite file
  pg 1      `splitwatch serve` on PostgreSQL, 1 worker
  pg N      `splitwatch serve --workers N` on PostgreSQL (--pg-workers, default 2: this box's cores)
  floor     (--floor) bench/floor_app.py on the same uvicorn: json-decodes the body and stores its
            events, group-committed by one writer thread, before answering; nothing else: the
            least any server that keeps the events does. One row per engine asked for.
Each: requests/s, p50, p99, the server processes' CPU per request (utime + stime of the server
and its worker processes from /proc; PostgreSQL's own backends are not in it, see `db CPU`), and
hosts at a 10 s interval (requests/s x 10).
The backends run in alternating rounds (--rounds, --seconds each; each round starts one row
later than the one before); a row's rate is the median of its rounds, its ratio is the median
of the per-round ratios to the bare rate of the same round.
Bars (PASS/FAIL per row): >= 1,000 requests/s, p99 < 250 ms, >= 0.4 x the bare rate.

Run: .venv/bin/python bench/bench_fleet.py [--rounds 3] [--seconds 4] [--pg-workers 2]
     [--only sqlite,pg1] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
     [--compare-src DIR] [--reads 20] [--switch-ms 5,10,20] [--health off|on|both] [--floor]
--compare-src runs each serve row a second time from another source tree (before/after a change
in the same run, the same rounds and load): git archive BASE | tar -x -C DIR.
--reads R adds, to every serve row's load, a reader with a viewer token asking for the fleet
view's reads (summary, the action and per-host charts, the host list, the top guests; in turn)
at R requests/s, open loop: a read's latency counts from when it was due, so a slow server is
not given fewer reads. Printed per row: the reads' p50/p99/max and each round's p99.
--health adds the `health` figures a looping agent sends with every batch (agent/health.py:
uptime, last pass and last answer change every time, so the host row's health JSON is rewritten
on every request); `both` runs each serve row with and without them in the same rounds.
--switch-ms runs each serve row once per GIL switch interval (sys.setswitchinterval, in ms),
in the same rounds: set by a sitecustomize on the server's PYTHONPATH (its worker processes
too).
Bounded: about rounds x backends x (seconds + 1) s plus set-up (~1 min with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.fakehost import FakeHost  # noqa: E402

HOSTS = 400
SENDERS = 16
RATE_BAR = 1000.0
P99_BAR_MS = 250.0
RATIO_BAR = 0.4
INTERVAL_S = 10  # the agent's default interval: hosts served = requests/s x 10

# --switch-ms: run before anything else in the server's interpreters (and uvicorn's spawned
# workers, which inherit the environment but not the interval), whatever tree they run.
SWITCH_SITECUSTOMIZE = """
import os, sys
_ms = os.environ.get("BENCH_SWITCH_INTERVAL_MS")
if _ms:
    sys.setswitchinterval(float(_ms) / 1000)
"""

BARE_APP = """
import json, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def ingest(request):
    body = json.loads(await request.body())
    return JSONResponse({"accepted": len(body["events"]), "duplicates": 0})

app = Starlette(routes=[Route("/api/v1/ingest", ingest, methods=["POST"]),
                        Route("/readyz", lambda r: JSONResponse({"ready": True}))])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False,
            proxy_headers=True)
"""


# ----------------------------------------------------------------------------- the payload


def agent_payload(splitwatch: str, tmp: Path) -> dict[str, object]:
    """One steady-state payload of the real agent: a pass after the boot messages were read."""
    host = FakeHost(tmp / "host").cpus(32).mode("warn").tracefs().boot_messages()
    vm = host.qemu("web-1", pid=4242, vcpus=4)
    cmd = [splitwatch, "agent", "--once", "--stdout", "--root", str(host.root), "--state-dir", str(tmp)]
    subprocess.run(cmd, check=True, capture_output=True)  # the boot: read once, cursor kept
    for cpu in range(3):
        host.split_lock(vm.vcpu_comm(cpu), vm.vcpu_tids[cpu])
        host.trace_hit("handle_guest_split_lock", vm.vcpu_comm(cpu), vm.vcpu_tids[cpu], cpu=cpu)
    host.bus_lock("stress-ng", 777)
    host.trace_hit("handle_bus_lock", "stress-ng", 777, cpu=5)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    payload: dict[str, object] = json.loads(out[0])
    return payload


class Bodies:
    """Request bodies from the agent's payload: per host its name, SEQs, times and state sample.

    The payload is serialized once with %-placeholders, so a body costs a string format, not a
    json.dumps (the client shares the server's two cores).
    """

    def __init__(
        self, payload: dict[str, object], base: datetime, state_every: int = 1, health: bool = False
    ) -> None:
        events = payload["events"]
        state = payload["state"]
        assert isinstance(events, list) and isinstance(state, dict), payload
        self.n_events = len(events)
        self.base = base
        self.state_every = state_every
        p = json.loads(json.dumps(payload).replace("%", "%%"))
        p["host"]["name"] = "@@name@@"
        p["host"]["boot_id"] = "@@boot@@"
        p["state"]["observed_at"] = "@@t@@"
        self.offsets: list[float] = []
        first = datetime.fromisoformat(events[0]["time"].replace("Z", "+00:00"))
        for i, e in enumerate(p["events"]):
            at = datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
            self.offsets.append((at - first).total_seconds())
            e["seq"] = 987_650_000 + i
            e["time"] = f"@@e{i}@@"
            if e["guest"] is not None:
                # Each host runs its own guests: one guest row shared by the whole fleet would be
                # a lock every PostgreSQL transaction waits for, which no real fleet has.
                e["guest"]["name"] = "@@guest@@"
        if health:
            # What a looping agent adds to every batch (agent/health.py; `--once --stdout` has
            # none): its uptime, last pass and last answer change on every request.
            p["health"] = {
                "interval_s": INTERVAL_S,
                "uptime_s": "@@up@@",
                "pass_duration_s": "@@pass@@",
                "msr_errors": 0,
                "kmsg_status": "ok",
                "statuses": {"procfs": "ok", "kmsg": "ok", "tracefs": "ok", "msr": "ok"},
                "lag_s": 0.0,
                "spool_depth": 0,
                "spool_bytes": 0,
                "drops": 0,
                "dropped_payloads": 0,
                "corrupt_records": 0,
                "rejected_batches": 0,
                "last_ack_at": "@@ack@@",
                "send_failures": 0,
                "token_rejected": None,
            }
        self.template = self._render(p)
        # What the agent sends while its state is unchanged (agent/state_refresh.py).
        self.stateless = self._render({**p, "state": None})

    def _render(self, p: dict[str, Any]) -> str:
        text = json.dumps(p, separators=(",", ":"))
        text = text.replace('"@@name@@"', '"%(name)s"').replace('"@@boot@@"', '"%(boot)s"')
        text = text.replace('"@@t@@"', '"%(t)s"').replace('"@@guest@@"', '"%(name)s-vm-1"')
        text = text.replace('"@@up@@"', "%(up).3f").replace('"@@pass@@"', "%(pass).4f")
        text = text.replace('"@@ack@@"', '"%(ack)s"')
        for i in range(self.n_events):
            text = text.replace(f'"@@e{i}@@"', f'"%(e{i})s"').replace(str(987_650_000 + i), f"%(s{i})d")
        return text

    def body(self, host: str, boot: str, k: int) -> bytes:
        """The k-th pass of `host`: 10 s after the (k-1)-th, with the next SEQs."""
        at = self.base + timedelta(seconds=INTERVAL_S * k)
        values: dict[str, object] = {
            "name": host,
            "boot": boot,
            "t": _iso(at),
            "up": INTERVAL_S * k + 0.123,
            "pass": 0.0105 + (k % 7) / 1000,
            "ack": _iso(at - timedelta(seconds=INTERVAL_S)),
        }
        for i, off in enumerate(self.offsets):
            values[f"e{i}"] = _iso(at + timedelta(seconds=off))
            values[f"s{i}"] = k * self.n_events + i
        template = self.template if k % self.state_every == 0 else self.stateless
        return (template % values).encode()


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ----------------------------------------------------------------------------- the client


@dataclass
class Fleet:
    hosts: list[str]
    tokens: dict[str, str]
    boots: dict[str, str] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)  # per backend+host: next pass number


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, token: str, body: bytes
) -> int:
    head = (
        f"POST /api/v1/ingest HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    answer = await reader.readexactly(length)
    status = int(status_line.split()[1])
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {answer[:300]!r}")
    return status


def read_paths(base: datetime) -> list[tuple[str, str]]:
    """What the dashboard's fleet view asks for (frontend/js/views/fleet.js), over a day that
    holds the bench's events (their times start at `base`), at the view's 15 min step."""
    q = f"since={_iso(base - timedelta(hours=1))}&until={_iso(base + timedelta(hours=23))}"
    return [
        ("summary", f"/api/v1/summary?{q}"),
        ("chart by action", f"/api/v1/series?{q}&step=900&group_by=action"),
        ("chart by host", f"/api/v1/series?{q}&step=900&group_by=host&top=30"),
        ("hosts by name", f"/api/v1/hosts?{q}&limit=200"),
        ("busiest hosts", f"/api/v1/hosts?{q}&sort=events&limit=100"),
        ("hosts needing action", f"/api/v1/hosts?{q}&needs_action=true&limit=200"),
        ("silent hosts", f"/api/v1/hosts?{q}&status=silent&limit=200"),
        ("top guests", f"/api/v1/guests?{q}&sort=events&limit=100"),
    ]


async def read_answer(reader: asyncio.StreamReader, what: str) -> tuple[int, bytes, bool]:
    """An HTTP/1.1 answer read whole: its status, its body (by Content-Length or chunked) and
    whether the server closes the connection after it."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError(f"{what}: the server closed the connection")
    length, chunked, close = 0, False, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    if chunked:
        answer = b""
        while size := int((await reader.readline()).split(b";")[0], 16):
            answer += await reader.readexactly(size + 2)
        await reader.readline()  # the empty trailer
    else:
        answer = await reader.readexactly(length)
    return int(status_line.split()[1]), answer, close


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, token: str, path: str
) -> None:
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    status, answer, _close = await read_answer(reader, f"GET {path}")
    if status != 200:
        raise RuntimeError(f"GET {path}: HTTP {status}: {answer[:300]!r}")


READ_IDLE_S = 3.0


@dataclass
class Reads:
    """--reads: a viewer's requests at `rate` per second over `paths` in turn, open loop."""

    token: str
    paths: list[tuple[str, str]]  # (name, path)
    rate: float


async def _read_load(port: int, reads: Reads, deadline: float) -> list[tuple[int, float]]:
    """(path index, seconds from when the read was due to its answer) for each read due before
    `deadline`. Reads go out on schedule on as many connections as are busy, so a read the
    server is slow to answer neither delays nor thins out the ones after it."""
    # (reader, writer, when it was last used): a connection left idle near the server's keep-alive
    # timeout (5 s) may be closed under the next request, so it is not reused past READ_IDLE_S.
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    out: list[tuple[int, float]] = []

    async def one(i: int, due: float) -> None:
        while idle and idle[0][2] < time.perf_counter() - READ_IDLE_S:
            idle.pop(0)[1].close()  # the oldest first: the list is in order of last use
        reader, writer = (idle.pop()[:2]) if idle else await asyncio.open_connection("127.0.0.1", port)
        await _get(reader, writer, port, reads.token, reads.paths[i % len(reads.paths)][1])
        out.append((i % len(reads.paths), time.perf_counter() - due))
        idle.append((reader, writer, time.perf_counter()))

    tasks = []
    start = time.perf_counter()
    i = 0
    while (due := start + i / reads.rate) < deadline:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i, due)))
        i += 1
    try:
        await asyncio.gather(*tasks)
    finally:
        for _, writer, _ in idle:
            writer.close()
    return out


async def _load(
    port: int,
    fleet: Fleet,
    bodies: Bodies,
    key: str,
    seconds: float | None,
    each_host_once: bool,
    reads: Reads | None = None,
) -> tuple[int, list[float], float, list[tuple[int, float]]]:
    """SENDERS connections; sender j sends for hosts j, j+SENDERS, ... in turn. With `reads`,
    a reader at the same time (until the same deadline). Returns the requests sent, their
    latencies, the senders' wall time and the reads' (path index, latency)."""
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = None if seconds is None else started + seconds

    async def sender(j: int) -> None:
        mine = fleet.hosts[j::SENDERS]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            i = 0
            while True:
                if each_host_once and i >= len(mine):
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                host = mine[i % len(mine)]
                i += 1
                k = fleet.passes.get(key + host, 0)
                fleet.passes[key + host] = k + 1
                body = bodies.body(host, fleet.boots[host], k)
                t0 = time.perf_counter()
                await _post(reader, writer, port, fleet.tokens[host], body)
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    reader = None
    if reads is not None and deadline is not None:
        reader = asyncio.create_task(_read_load(port, reads, deadline))
    await asyncio.gather(*(sender(j) for j in range(SENDERS)))
    wall = time.perf_counter() - started
    read_latencies = await reader if reader is not None else []
    return len(latencies), latencies, wall, read_latencies


# ----------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ticks(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(d.name))
    return out


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of pid and its live descendants (uvicorn's worker processes)."""
    children = _children()
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += _ticks(p)
        except OSError:
            continue
        todo.extend(children.get(p, []))
    return total


def backend_pids(admin_url: str, database: str) -> list[int]:
    """The PostgreSQL backend processes connected to `database` (the server's pool)."""
    import psycopg

    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)).fetchall()
    return [int(r[0]) for r in rows]


def pids_cpu_seconds(pids: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        try:
            out[pid] = _ticks(pid)
        except OSError:
            continue
    return out


@dataclass
class Backend:
    key: str
    label: str
    command: list[str]
    env: dict[str, str]
    port: int
    database: str | None = None  # PostgreSQL: the database's name, to find its backends
    proc: subprocess.Popen[str] | None = None
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    db_cpu_ms: list[float] = field(default_factory=list)
    switch_ms: float | None = None  # --switch-ms: this row's GIL switch interval
    reads: Reads | None = None
    read_rounds: list[list[tuple[int, float]]] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, env=self.env, stderr=subprocess.PIPE, text=True)

    def wait_ready(self) -> None:
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            assert self.proc is not None
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise SystemExit(f"{self.label} exited: {err}")
            time.sleep(0.1)
        raise SystemExit(f"{self.label} did not become ready")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode not in (0, -15):
            print(f"{self.label} stderr:\n{err[-2000:]}", file=sys.stderr)


def _py_spy(b: Backend, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    """py-spy on the serve process and its workers for `seconds`, folded stacks per thread."""
    if b.key == "bare" or b.proc is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [
        str(spy),
        "record",
        "--pid",
        str(b.proc.pid),
        "--subprocesses",
        "--threads",
        "--nonblocking",
        "-r",
        "200",
        "-d",
        str(max(1, int(seconds))),
        "-f",
        "raw",
        "-o",
        str(out / f"{b.key}.txt"),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_cli(cmd: list[str], env: dict[str, str]) -> str:
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout


def prepare_database(
    splitwatch: str, url: str, hosts: list[str], tmp: Path, env: dict[str, str]
) -> dict[str, str]:
    """Migrate and make the hosts' agent tokens with the CLI of the tree `env` runs (its
    PYTHONPATH: --compare-src trees may be at another migration head)."""
    env = {**env, "SPLITWATCH_DATABASE_URL": url, "SPLITWATCH_LOG_LEVEL": "warning"}
    run_cli([splitwatch, "db", "upgrade"], env)
    hosts_file = tmp / "hosts.txt"
    hosts_file.write_text("\n".join(hosts) + "\n")
    out = run_cli([splitwatch, "token", "create", "--hosts-file", str(hosts_file)], env)
    pairs = (line.split(",", 1) for line in out.splitlines() if "," in line and not line.startswith("host,"))
    tokens = dict(pairs)
    missing = set(hosts) - set(tokens)
    if missing:
        raise SystemExit(f"no token for {len(missing)} hosts: {out[:300]}")
    return tokens


def viewer_token(splitwatch: str, url: str, env: dict[str, str]) -> str:
    env = {**env, "SPLITWATCH_DATABASE_URL": url, "SPLITWATCH_LOG_LEVEL": "warning"}
    out = run_cli([splitwatch, "token", "create", "--role", "viewer", "--label", "bench_fleet --reads"], env)
    return out.strip().splitlines()[-1]


def make_day_partitions(url: str, first: datetime) -> None:
    """PostgreSQL: the event day partitions from `first` on, as the server's retention task
    would have made them when those days came. The bench's times start two days back, and
    without them every event would land in the default partition, which production ingest
    (events of today) never writes to."""
    from app.retention.partitions import ensure_day_partition
    from app.retention.plan import days_to_make
    from app.store.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for day in days_to_make(datetime.now(UTC), first=first):
                ensure_day_partition(conn, day)
    finally:
        engine.dispose()


def pg_database(admin_url: str, name: str, create: bool) -> str:
    import psycopg

    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return f"{base}/{name}"


# ----------------------------------------------------------------------------- main


def pct(values: list[float], q: float) -> float:  # values in s, the answer in ms
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] * 1000 if s else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="load per backend per round")
    parser.add_argument("--pg-workers", type=int, default=2)
    parser.add_argument(
        "--state-every",
        type=int,
        default=12,
        help="full state in every Nth request of a host, state null in the others (12, the default: "
        "the agent's 120 s refresh at a 10 s interval; 1: every request, the issue's first payload)",
    )
    parser.add_argument(
        "--health",
        choices=("off", "on", "both"),
        default="off",
        help="the agent's `health` figures in every request, as a looping agent sends them (off: the "
        "issue's payload, `--once --stdout`, has none; both: each serve row with and without, "
        "same run, same rounds)",
    )
    parser.add_argument("--only", default="sqlite,pg1,pgN", help="backends besides bare (comma list)")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run bench/floor_app.py (the events stored, nothing else) on SQLite with sqlite in "
        "--only and on PostgreSQL with pg1 or pgN: the floor under the ratio bar, not judged by it",
    )
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--compare-src",
        type=Path,
        help="also run each serve backend from this source tree (PYTHONPATH), e.g. the commit before a "
        "change: `git archive BASE | tar -x -C DIR`; rows labelled `(DIR's name)`, same run, same rounds",
    )
    parser.add_argument(
        "--reads",
        type=float,
        default=0.0,
        help="a viewer reading the fleet view's answers at this many requests/s during every serve row's "
        "load, open loop (0: none); their p50/p99 printed per row",
    )
    parser.add_argument(
        "--switch-ms",
        help="run each serve row once per GIL switch interval in this comma list of ms (5 is Python's "
        "default), e.g. 5,10,20: rows labelled `switch N ms`, same run, same rounds",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="record each serve backend with py-spy (pip install py-spy) during its first round, "
        "folded stacks into DIR/<backend>.txt (summarise with bench/profile_top.py)",
    )
    args = parser.parse_args()

    splitwatch = str(Path(sys.executable).with_name("splitwatch"))
    wanted = set(args.only.split(",")) if args.only else set()
    hosts = [f"fleet-{i:04d}" for i in range(HOSTS)]
    pg_names: list[str] = []
    backends: list[Backend] = []
    with tempfile.TemporaryDirectory(prefix="bench_fleet_") as tmp_:
        tmp = Path(tmp_)
        payload = agent_payload(splitwatch, tmp / "agent")
        # Two days back: the bench's passes come faster than every 10 s, their times do not.
        base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
        bodies = Bodies(payload, base, args.state_every, health=args.health == "on")
        with_health = Bodies(payload, base, args.state_every, health=True)
        sample = bodies.body(hosts[0], "boot", 0)
        stateless = len(bodies.body(hosts[0], "boot", 1)) if args.state_every > 1 else None
        state = payload["state"]
        assert isinstance(state, dict)
        print(
            f"payload: `splitwatch agent --once --stdout`, 32-CPU fake host with tracefs: "
            f"{bodies.n_events} events, {len(state['cpus'])} CPU states, {len(sample)} bytes"
        )
        if stateless is not None:
            print(
                f"state in every {args.state_every}th request of a host, the others state null: "
                f"{stateless} bytes"
            )
        fleets: dict[str, Fleet] = {}
        base_env = {**os.environ, "SPLITWATCH_LOG_LEVEL": "warning"}
        port = free_port()
        bare_cmd = [sys.executable, "-c", BARE_APP, str(port)]
        backends.append(Backend("bare", "bare Starlette, json.loads only", bare_cmd, base_env, port))
        fleets["bare"] = Fleet(hosts, {h: "x" for h in hosts})
        floors: list[Backend] = []
        for engine in ("sqlite", "postgresql") if args.floor else ():
            if not wanted & ({"sqlite"} if engine == "sqlite" else {"pg1", "pgN"}):
                continue
            database = None
            if engine == "sqlite":
                where = str(tmp / "floor.db")
            else:
                database = f"bench_fleet_floor_{uuid.uuid4().hex[:8]}"
                pg_names.append(database)
                where = pg_database(args.pg_url, database, create=True)
            port = free_port()
            cmd = [sys.executable, str(ROOT / "bench" / "floor_app.py"), str(port), engine, where]
            name = "SQLite" if engine == "sqlite" else "PostgreSQL"
            floors.append(Backend(f"floor_{engine}", f"floor, {name}: the events stored only", cmd,
                                  base_env, port, database=database))  # fmt: skip
            fleets[f"floor_{engine}"] = Fleet(hosts, {h: "x" for h in hosts})
        backends.extend(floors)
        plan: list[tuple[str, str, int]] = []
        if "sqlite" in wanted:
            plan.append(("sqlite", "serve, SQLite", 1))
        if "pg1" in wanted:
            plan.append(("pg1", "serve, PostgreSQL, 1 worker", 1))
        if "pgN" in wanted:
            plan.append(("pgN", f"serve, PostgreSQL, {args.pg_workers} workers", args.pg_workers))
        compared: set[str] = set()
        if args.compare_src:
            src = args.compare_src.resolve()
            tag = "".join(c for c in src.name.lower() if c.isalnum())
            compared = {f"{tag}_{key}" for key, _label, _workers in plan}
            plan = [
                row
                for key, label, workers in plan
                for row in ((key, label, workers), (f"{tag}_{key}", f"{label} ({src.name})", workers))
            ]
        healthy: set[str] = set()

        def body_of(key: str) -> Bodies:
            return with_health if key in healthy else bodies

        if args.health == "both":
            healthy = {f"h_{key}" for key, _label, _workers in plan}
            compared |= {f"h_{key}" for key in compared}
            plan = [
                row
                for key, label, workers in plan
                for row in ((key, label, workers), (f"h_{key}", f"{label} + health", workers))
            ]
        switches: dict[str, float] = {}
        switch_dir = tmp / "switch"
        if args.switch_ms:
            switch_dir.mkdir()
            (switch_dir / "sitecustomize.py").write_text(SWITCH_SITECUSTOMIZE)
            intervals = [float(ms) for ms in args.switch_ms.split(",")]
            expanded = []
            for key, label, workers in plan:
                for ms in intervals:
                    switches[f"sw{ms:g}_{key}"] = ms
                    expanded.append((f"sw{ms:g}_{key}", f"{label}, switch {ms:g} ms", workers))
            compared = {k for k in switches if k.split("_", 1)[1] in compared}
            plan = expanded
        try:
            for key, label, workers in plan:
                env = base_env
                if key in compared:
                    env = {**base_env, "PYTHONPATH": str(args.compare_src.resolve())}
                if key in switches:
                    ms_text = f"{switches[key]:g}"
                    path = os.pathsep.join(p for p in (str(switch_dir), env.get("PYTHONPATH")) if p)
                    env = {**env, "PYTHONPATH": path, "BENCH_SWITCH_INTERVAL_MS": ms_text}
                    check = [sys.executable, "-c", "import sys; print(sys.getswitchinterval())"]
                    applied = float(run_cli(check, env))
                    if abs(applied - switches[key] / 1000) > 1e-9:
                        raise SystemExit(f"{label}: the sitecustomize did not apply ({applied} s)")
                if key.endswith("sqlite"):
                    url = f"sqlite:///{tmp / f'{key}.db'}"
                else:
                    name = f"bench_fleet_{key}_{uuid.uuid4().hex[:8]}".lower()
                    url = pg_database(args.pg_url, name, create=True)
                    pg_names.append(name)
                tokens = prepare_database(splitwatch, url, hosts, tmp, env)
                if not key.endswith("sqlite"):
                    make_day_partitions(url, base)
                fleets[key] = Fleet(hosts, tokens)
                port = free_port()
                cmd = [splitwatch, "serve", "--port", str(port), "--database-url", url]
                if workers > 1:
                    cmd += ["--workers", str(workers)]
                database = None if key.endswith("sqlite") else pg_names[-1]
                b = Backend(key, label, cmd, env, port, database=database, switch_ms=switches.get(key))
                if args.reads > 0:
                    b.reads = Reads(viewer_token(splitwatch, url, env), read_paths(base), args.reads)
                backends.append(b)
            for b in backends:
                b.start()
            for b in backends:
                b.wait_ready()
            for key, fleet in fleets.items():
                fleet.boots = {h: f"{key}-{h}" for h in hosts}
            # Warm-up: every host's first pass (the host, its guest and first state are created).
            for b in backends:
                asyncio.run(_load(b.port, fleets[b.key], body_of(b.key), b.key, None, each_host_once=True))
            for r in range(args.rounds):
                # Each round starts one row later: no row always runs right after the same one.
                for b in backends[r % len(backends) :] + backends[: r % len(backends)]:
                    assert b.proc is not None
                    db0 = pids_cpu_seconds(backend_pids(args.pg_url, b.database)) if b.database else {}
                    cpu0 = tree_cpu_seconds(b.proc.pid)
                    spy = _py_spy(b, args.profile, args.seconds) if args.profile and not b.rates else None
                    n, lat, wall, read_lat = asyncio.run(
                        _load(b.port, fleets[b.key], body_of(b.key), b.key, args.seconds, False, b.reads)
                    )
                    if b.reads is not None:
                        b.read_rounds.append(read_lat)
                    if spy is not None:
                        spy.wait(timeout=60)
                    b.rates.append(n / wall)
                    b.latencies.extend(lat)
                    b.cpu_ms.append((tree_cpu_seconds(b.proc.pid) - cpu0) / n * 1000)
                    if b.database:
                        db1 = pids_cpu_seconds(backend_pids(args.pg_url, b.database))
                        db_s = sum(t - db0.get(pid, 0.0) for pid, t in db1.items())
                        b.db_cpu_ms.append(db_s / n * 1000)
        finally:
            for b in backends:
                b.stop()
            for name in pg_names:
                try:
                    pg_database(args.pg_url, name, create=False)
                except Exception as exc:  # cleanup is best effort
                    print(f"could not drop {name}: {exc}", file=sys.stderr)

    bare = backends[0]
    print(
        f"{SENDERS} concurrent senders over {HOSTS} hosts, "
        f"{args.rounds} rounds x {args.seconds:g} s per backend"
    )
    print(f"machine: {os.cpu_count()} CPUs, load average (1 min) {os.getloadavg()[0]:.2f}")
    w = label_width(backends)
    header = (
        f"{'backend':{w}} {'req/s':>7} {'x bare':>6} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10} "
        f"{'db CPU':>7} {'hosts@10s':>9}  verdict"
    )
    print(header)
    failed = False
    for b in backends:
        rate = statistics.median(b.rates)
        ratio = statistics.median(r / br for r, br in zip(b.rates, bare.rates, strict=True))
        p50, p99 = pct(b.latencies, 0.5), pct(b.latencies, 0.99)
        cpu = statistics.median(b.cpu_ms)
        db = f"{statistics.median(b.db_cpu_ms):7.2f}" if b.db_cpu_ms else f"{'-':>7}"
        if b is bare:
            verdict = "(baseline)"
        elif b in floors:
            verdict = f"(floor: {'at or over' if ratio >= RATIO_BAR else 'under'} {RATIO_BAR} x bare)"
        else:
            misses = [
                what
                for what, ok in (
                    (f"rate < {RATE_BAR:.0f}/s", rate >= RATE_BAR),
                    (f"p99 >= {P99_BAR_MS:.0f} ms", p99 < P99_BAR_MS),
                    (f"< {RATIO_BAR} x bare", ratio >= RATIO_BAR),
                )
                if not ok
            ]
            verdict = "PASS" if not misses else "FAIL (" + "; ".join(misses) + ")"
            failed |= bool(misses)
        print(
            f"{b.label:{w}} {rate:7.0f} {ratio:6.2f} {p50:7.1f} {p99:7.1f} {cpu:10.2f} {db} "
            f"{rate * INTERVAL_S:9.0f}  {verdict}"
        )
        print(f"{'':{w}} rounds: " + ", ".join(f"{r:.0f}" for r in b.rates))
    print(f"bars: >= {RATE_BAR:.0f} requests/s, p99 < {P99_BAR_MS:.0f} ms, >= {RATIO_BAR} x bare, same run")
    for b in floors:
        ratio = statistics.median(r / br for r, br in zip(b.rates, bare.rates, strict=True))
        if ratio < RATIO_BAR:
            print(
                f"{b.label}: {ratio:.2f} x bare. Storing the events and nothing else misses the "
                f"{RATIO_BAR} x bare bar on this machine: so does any server that keeps them"
            )
    if args.reads > 0:
        print_reads(backends, args.reads)
    if switches:
        print_switches(backends)
    print("db CPU: ms per request of the PostgreSQL backends connected to the bench's database")
    if failed:
        raise SystemExit(1)


def label_width(backends: list[Backend]) -> int:
    return max(36, *(len(b.label) for b in backends))


def print_reads(backends: list[Backend], rate: float) -> None:
    with_reads = [b for b in backends if b.reads is not None]
    w = label_width(backends)
    names = [name for name, _ in with_reads[0].reads.paths] if with_reads and with_reads[0].reads else []
    print(f"reads during the load: {rate:g}/s, open loop (latency from when each was due), the fleet view's")
    head = f"{'backend':{w}} {'reads':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    print(f"{head}  p99 per round; p50 by read")
    for b in with_reads:
        every = [t for r in b.read_rounds for _, t in r]
        per_round = ", ".join(f"{pct([t for _, t in r], 0.99):.0f}" for r in b.read_rounds)
        by_path = ", ".join(
            f"{name} {pct([t for i, t in (x for r in b.read_rounds for x in r) if i == k], 0.5):.0f}"
            for k, name in enumerate(names)
        )
        print(
            f"{b.label:{w}} {len(every):6d} {pct(every, 0.5):7.1f} {pct(every, 0.99):7.1f} "
            f"{max(every) * 1000:7.1f}  ({per_round}); {by_path}"
        )


def print_switches(backends: list[Backend]) -> None:
    """Each switch interval against the first one of the same row, round by round."""
    rows: dict[str, list[Backend]] = {}
    for b in backends:
        if b.switch_ms is not None:
            rows.setdefault(b.key.split("_", 1)[1], []).append(b)
    w = label_width(backends)
    print("switch intervals against the first, per round (rate ratio; read p99 ratio):")
    for row in rows.values():
        first = row[0]
        for b in row[1:]:
            rates = ", ".join(f"{r / f:.2f}" for r, f in zip(b.rates, first.rates, strict=True))
            line = f"  {b.label:{w}} rate x ({rates})"
            if b.read_rounds:
                p99s = ", ".join(
                    f"{pct([t for _, t in r], 0.99) / pct([t for _, t in f], 0.99):.2f}"
                    for r, f in zip(b.read_rounds, first.read_rounds, strict=True)
                )
                line += f"; read p99 x ({p99s})"
            print(line)


if __name__ == "__main__":
    main()
