"""Ingest throughput and latency through the whole HTTP path (docs/benchmarks.md, #13), on SQLite and
PostgreSQL.

1. Throughput: 1000-event batches POSTed one after another to a real `splitwatch serve`
   (uvicorn, its own process), in events/s; against the same-run baseline: a bare
   executemany of the same rows into an equivalent `event` table (the same DDL and indexes;
   SQLite: `sqlite3.executemany` with the writer's pragmas, its WAL checkpointed after each
   round, off the clock, as the server's helper thread does; PostgreSQL: psycopg's
   `executemany`, pipeline mode, into a database of its own), one transaction per 1000 rows.
   Bar: ratio >= 0.5, as the median of the rounds' ratios and as best HTTP / best bare.
2. Latency: 8 concurrent senders (8 hosts the server knows: each sender's first batch, which
   makes its host, is sent before the clock and printed apart), 1000-event batches; p50 and p99.
   Bar: p99 < 250 ms.
PASS/FAIL is printed per bar and backend; the exit status is 1 when a bar is missed.
--floor adds, to the throughput rounds, bench/floor_app.py on a database of its own: the same
bodies through the same HTTP stack, json-decoded and their events stored, nothing else (no
token, validation, host, guest or rollup rows, no duplicate detection): the floor under the
ratio bar, printed beside it and not judged by it.

Run: .venv/bin/python bench/bench_ingest.py [--batches N] [--per-sender N] [--backends sqlite,postgresql]
     [--profile DIR [--profile-gil]] [--compare-src DIR] [--floor]
--compare-src runs each backend a second time, first, from another source tree (before/after a
change back to back in one run, under the same load): git archive BASE | tar -x -C DIR. Only this
tree's figures decide PASS/FAIL.
The request bodies and baseline rows are built before timing starts. On a shared machine,
HTTP and bare runs alternate in rounds (--rounds); the ratio is the median of the rounds'
ratios (a round compares equal table sizes under the same load), best-of-each is shown too.
The server's CPU time per batch is printed as well: other processes' load inflates wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy.engine import Dialect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.payload import (  # noqa: E402
    Action,
    CpuState,
    Event,
    Guest,
    HostInfo,
    HostState,
    Kind,
    Mode,
    Payload,
    Source,
)
from app.ingest.writer import WRITER_CACHE_KIB  # noqa: E402

BATCH = 1000
EVENT_COLUMNS = (
    "host_id, boot_id, source, seq, time, received_at, kind, comm, tid, tgid, address, count, "
    "action, guest_id, vcpu, vmm"
)


def make_events(start_seq: int, n: int, at: datetime, host: str = "bench") -> tuple[Event, ...]:
    """n events; the host's own 16 guests (a guest row shared by every sender would be one
    PostgreSQL row lock all their transactions queue on, which no real fleet has)."""
    return tuple(
        Event(
            source=Source.KMSG,
            seq=start_seq + i,
            time=at + timedelta(milliseconds=37 * i),
            kind=Kind.SPLIT_LOCK if i % 3 else Kind.BUS_LOCK,
            comm=f"CPU {i % 8}/KVM" if i % 2 else "stress-ng",
            tid=4000 + i % 64,
            tgid=3999,
            address=f"0x{0x7F0000001000 + i * 64:x}",
            count=1 + i % 4,
            action=Action.WARN if i % 5 else Action.THROTTLE,
            guest=Guest(name=f"{host}-vm-{i % 16}", uuid=None, vmm="qemu", vcpu=i % 8) if i % 2 else None,
        )
        for i in range(n)
    )


def make_body(host: str, batch: int, at: datetime) -> bytes:
    state = HostState(
        observed_at=at + timedelta(seconds=batch),
        mode=Mode.WARN,
        ratelimit=None,
        mitigate=1,
        sld_supported=True,
        bld_supported=True,
        cpus=tuple(CpuState(c, 1 << 29, True, True) for c in range(64)),
    )
    payload = Payload(
        host=HostInfo(host, "boot-1", "6.8.0-45-generic", "Intel Xeon Gold 6338", "0.1.0"),
        state=state,
        events=make_events(batch * BATCH, BATCH, at + timedelta(seconds=batch), host),
    )
    return payload.to_json().encode()


def baseline_rows(batch: int, at: datetime, text_times: bool = True) -> list[tuple[object, ...]]:
    """The rows as the bare insert takes them: SQLite text times, or datetimes for PostgreSQL."""
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    received = datetime.now(UTC)
    now: object = received.strftime(fmt) if text_times else received

    def when(t: datetime) -> object:
        return t.strftime(fmt) if text_times else t

    return [
        (
            1, "boot-1", str(e.source), e.seq, when(e.time), now, str(e.kind), e.comm, e.tid,
            e.tgid, e.address, e.count, str(e.action), (i % 16 + 1) if e.guest else None,
            e.guest.vcpu if e.guest else None, e.guest.vmm if e.guest else None,
        )
        for i, e in enumerate(make_events(batch * BATCH, BATCH, at + timedelta(seconds=batch)))
    ]  # fmt: skip


class BareSqlite:
    """sqlite3.executemany into the same event table (DDL and indexes from the metadata)."""

    def __init__(self, path: Path) -> None:
        from sqlalchemy.dialects import sqlite as sqlite_dialect

        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        # The server's writer connection runs with the same page cache and no automatic WAL
        # checkpoint (app/ingest/writer.py: a helper thread checkpoints off the commit path).
        # With SQLite's default (every 1000 WAL pages, inside a commit) the bare rounds after
        # the first paid checkpoints the server does not, and the ratio rose by half from
        # round 1 to rounds 2-3.
        self.conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")
        for statement in _event_ddl(sqlite_dialect.dialect()):
            self.conn.execute(statement)
        self.sql = f"INSERT INTO event ({EVENT_COLUMNS}) VALUES ({', '.join('?' * 16)})"

    def rate(self, batches: list[list[tuple[object, ...]]]) -> float:
        start = time.perf_counter()
        for rows in batches:
            self.conn.execute("BEGIN")
            self.conn.executemany(self.sql, rows)
            self.conn.execute("COMMIT")
        rate = len(batches) * BATCH / (time.perf_counter() - start)
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # untimed, as the server's helper
        return rate


def _event_ddl(dialect: Dialect) -> list[str]:
    """CREATE TABLE event (no foreign keys: the bare table stands alone) and its indexes."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    from app.store.tables import event

    ddl = str(CreateTable(event).compile(dialect=dialect))
    ddl = "\n".join(line for line in ddl.splitlines() if "FOREIGN KEY" not in line)
    ddl = re.sub(r",\s*\)\s*$", "\n)", ddl.strip())
    return [ddl] + [str(CreateIndex(index).compile(dialect=dialect)) for index in event.indexes]


class BarePostgres:
    """psycopg executemany (pipeline mode) into the same event table, one transaction per batch."""

    def __init__(self, url: str) -> None:
        import psycopg
        from sqlalchemy.dialects import postgresql

        self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        for statement in _event_ddl(postgresql.psycopg.dialect()):  # type: ignore[no-untyped-call]
            self.conn.execute(statement)
        self.sql = f"INSERT INTO event ({EVENT_COLUMNS}) VALUES ({', '.join(['%s'] * 16)})"

    def rate(self, batches: list[list[tuple[object, ...]]]) -> float:
        start = time.perf_counter()
        for rows in batches:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany(self.sql, rows)
        return len(batches) * BATCH / (time.perf_counter() - start)

    def close(self) -> None:
        self.conn.close()


def pg_database(admin_url: str, name: str, create: bool) -> str:
    """Drop (and create) database `name`; its URL."""
    import psycopg

    with psycopg.connect(
        admin_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), to tell CPU cost from waiting on a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_cpu_seconds(pid: int) -> float:
    """The server's main thread (uvicorn's event loop: body read, validation, rows)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _py_spy(pid: int, out: Path, gil: bool = False) -> subprocess.Popen[bytes]:
    """py-spy on the server (every thread, folded stacks) until interrupted: the sequential
    1000-event batches (the bare rounds between them leave the server idle, and
    bench/profile_top.py drops idle samples), then the concurrent senders into a file of their
    own. `gil`: only the samples of the thread holding the GIL (py-spy --gil)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "--pid", str(pid), "--threads", "--nonblocking", "-r", "200"]
    if gil:
        cmd.append("--gil")
    proc = subprocess.Popen(
        [*cmd, "-f", "raw", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(1.0)  # py-spy attaches before the first timed batch
    return proc


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(cmd: list[str], env: dict[str, str]) -> str:
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def run_backend(
    kind: str,
    url: str,
    bare: BareSqlite | BarePostgres,
    args: argparse.Namespace,
    tmp: Path,
    at: datetime,
    src: Path | None = None,
    floor_where: str | None = None,
) -> None:
    """Both measurements against one `splitwatch serve` on `url`, run from this tree or from
    `src` (--compare-src: its PYTHONPATH); prints the figures and verdicts."""
    splitwatch = str(Path(sys.executable).with_name("splitwatch"))
    env = {**os.environ, "SPLITWATCH_DATABASE_URL": url, "SPLITWATCH_LOG_LEVEL": "warning"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    run([splitwatch, "db", "upgrade"], env)
    hosts = ["bench-seq"] + [f"bench-{i}" for i in range(args.senders)]
    tokens = {h: run([splitwatch, "token", "create", "--role", "agent", "--host", h], env) for h in hosts}

    seq_bodies = [make_body("bench-seq", b, at) for b in range(args.batches + 2)]
    # Each sender's first body makes its host (sent untimed, below); the timed ones follow it.
    conc_bodies = {h: [make_body(h, b, at) for b in range(args.per_sender + 1)] for h in hosts[1:]}
    base_batches = [baseline_rows(b, at, text_times=kind == "sqlite") for b in range(args.batches)]

    port = free_port()
    server = subprocess.Popen(
        [splitwatch, "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    base_url = f"http://127.0.0.1:{port}"
    floor = floor_url = None
    if floor_where is not None:
        floor_port = free_port()
        floor_cmd = [sys.executable, str(ROOT / "bench" / "floor_app.py"), str(floor_port), kind, floor_where]
        floor = subprocess.Popen(floor_cmd, stderr=subprocess.PIPE, text=True)
        floor_url = f"http://127.0.0.1:{floor_port}"
    try:
        for what, where in ((server, base_url), (floor, floor_url)):
            if what is None:
                continue
            for _ in range(200):
                try:
                    if httpx.get(f"{where}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            else:
                raise SystemExit(f"{what.args} did not become ready")

        # 1. Throughput, one sender; two warm-up batches first. The machine is shared, so
        # HTTP and bare runs alternate in rounds and each keeps its best round.
        http_rates: list[float] = []
        bare_rates: list[float] = []
        floor_rates: list[float] = []
        cpu_used = 0.0
        loop_cpu_used = 0.0
        per_round = max(1, args.batches // args.rounds)
        with (
            httpx.Client(base_url=base_url, timeout=60) as client,
            httpx.Client(base_url=floor_url or base_url, timeout=60) as floor_client,
        ):
            if floor is not None:
                for body in seq_bodies[-2:]:
                    floor_client.post("/api/v1/ingest", content=body).raise_for_status()
            headers = {
                "Authorization": f"Bearer {tokens['bench-seq']}",
                "Content-Type": "application/json",
            }
            for body in seq_bodies[-2:]:
                client.post("/api/v1/ingest", content=body, headers=headers).raise_for_status()
            name = kind if src is None else f"{kind}-{src.name}"
            spy = None
            if args.profile:
                spy = _py_spy(server.pid, args.profile / f"{name}.txt", args.profile_gil)
            for r_ in range(args.rounds):
                chunk = seq_bodies[r_ * per_round : (r_ + 1) * per_round]
                cpu0 = cpu_seconds(server.pid)
                loop0 = main_thread_cpu_seconds(server.pid)
                start = time.perf_counter()
                for body in chunk:
                    r = client.post("/api/v1/ingest", content=body, headers=headers)
                    r.raise_for_status()
                    assert r.json()["accepted"] == BATCH, r.text
                http_rates.append(len(chunk) * BATCH / (time.perf_counter() - start))
                cpu_used += cpu_seconds(server.pid) - cpu0
                loop_cpu_used += main_thread_cpu_seconds(server.pid) - loop0
                if floor is not None:
                    start = time.perf_counter()
                    for body in chunk:
                        floor_client.post("/api/v1/ingest", content=body).raise_for_status()
                    floor_rates.append(len(chunk) * BATCH / (time.perf_counter() - start))
                bare_rates.append(bare.rate(base_batches[r_ * per_round : (r_ + 1) * per_round]))
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its profile when interrupted
            spy.wait(timeout=60)
        http_rate, bare_rate = max(http_rates), max(bare_rates)
        server_cpu_ms = cpu_used / (per_round * args.rounds) * 1000
        loop_cpu_ms = loop_cpu_used / (per_round * args.rounds) * 1000

        # 2. Latency with concurrent senders: a backlog is replayed by hosts the server knows
        # (their agent was cut off, then spools). So, as the throughput phase does, each sender
        # first sends one batch untimed, which makes its host and opens its connection; all
        # senders then start together. Those first batches (8 new hosts at the same instant)
        # are printed apart, not hidden: they are enrolment, not backlog.
        latencies: list[float] = []
        first: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        warmed = threading.Barrier(args.senders)
        barrier = threading.Barrier(args.senders)

        def sender(host: str) -> None:
            headers = {"Authorization": f"Bearer {tokens[host]}", "Content-Type": "application/json"}
            with httpx.Client(base_url=base_url, timeout=60) as client:
                warmed.wait()
                for i, body in enumerate(conc_bodies[host]):
                    if i == 1:
                        barrier.wait()
                    t0 = time.perf_counter()
                    r = client.post("/api/v1/ingest", content=body, headers=headers)
                    dt = time.perf_counter() - t0
                    with lock:
                        (first if i == 0 else latencies).append(dt)
                        if r.status_code != 200:
                            errors.append(f"{r.status_code} {r.text[:200]}")

        threads = [threading.Thread(target=sender, args=(h,)) for h in hosts[1:]]
        spy = None
        if args.profile:
            spy = _py_spy(server.pid, args.profile / f"{name}-senders.txt", args.profile_gil)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
    finally:
        for proc in (server, floor):
            if proc is None:
                continue
            proc.terminate()
            _, err = proc.communicate(timeout=30)
            if proc.returncode not in (0, -15):
                print(err, file=sys.stderr)

    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    # Same round = same table size and the same moment of a shared machine's load: the
    # median of per-round ratios is the headline; best-of-each must pass the bar too.
    ratio = statistics.median(h / b for h, b in zip(http_rates, bare_rates, strict=True))
    best = http_rate / bare_rate
    bare_name = "sqlite3.executemany" if kind == "sqlite" else "psycopg executemany"
    print(f"== {kind}" + ("" if src is None else f" ({src})"))
    print(f"HTTP ingest, 1000-event batches, 1 sender : {http_rate:10.0f} events/s (best of {args.rounds})")
    print(f"{'bare ' + bare_name + ', same rows':43}: {bare_rate:10.0f} events/s (best of {args.rounds})")
    print(
        "  per round (HTTP/bare events/s): "
        + ", ".join(f"{h:.0f}/{b:.0f} = {h / b:.2f}" for h, b in zip(http_rates, bare_rates, strict=True))
    )
    print(f"best HTTP / best bare                      : {best:10.2f}   (bar >= 0.5) {verdict(best >= 0.5)}")
    print(
        f"ratio, median of rounds                    : {ratio:10.2f}   (bar >= 0.5) {verdict(ratio >= 0.5)}"
    )
    if floor_rates:
        floor_ratio = statistics.median(f / b for f, b in zip(floor_rates, bare_rates, strict=True))
        floor_best = max(floor_rates) / bare_rate
        print(
            f"floor (the events stored only), same HTTP : {max(floor_rates):10.0f} events/s; per round "
            + ", ".join(f"{f / b:.2f}" for f, b in zip(floor_rates, bare_rates, strict=True))
        )
        print(
            f"  floor / bare: best {floor_best:.2f}, median of rounds {floor_ratio:.2f}"
            f"   (the HTTP path reaches {best / floor_best:.2f} and {ratio / floor_ratio:.2f} of them)"
        )
    print(
        f"server CPU per 1000-event batch            : {server_cpu_ms:10.1f} ms"
        f"   (event loop {loop_cpu_ms:.1f}, writer and other threads {server_cpu_ms - loop_cpu_ms:.1f})"
    )
    print(f"machine load average (1 min)               : {os.getloadavg()[0]:10.2f} on {os.cpu_count()} CPUs")
    print(
        f"{args.senders} concurrent senders, {len(latencies)} batches: p50 {p50:.0f} ms, p99 {p99:.0f} ms"
        f"   (bar p99 < 250 ms) {verdict(p99 < 250)}"
    )
    print(
        f"  slowest {max(latencies) * 1000:.0f} ms; before them, each sender's first batch (a new host, "
        f"all {len(first)} at once, untimed by the bar): max {max(first) * 1000:.0f} ms"
    )
    if errors:
        print(f"{len(errors)} errors, first: {errors[0]}")
        raise SystemExit(1)
    if src is None:
        RESULTS.append(ratio >= 0.5 and best >= 0.5 and p99 < 250)


RESULTS: list[bool] = []


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=30, help="sequential batches for throughput")
    parser.add_argument(
        "--per-sender",
        type=int,
        default=25,
        help="timed batches per sender for latency (8 x 25: p99 is the 2nd slowest of 200, not the max)",
    )
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating HTTP/bare rounds (best kept)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma list: sqlite, postgresql")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record the server with py-spy (pip install py-spy) during the sequential batches, "
        "folded stacks into DIR/<backend>.txt, and the concurrent senders into "
        "DIR/<backend>-senders.txt (summarise with bench/profile_top.py)",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: only the samples of the thread holding the GIL (py-spy --gil)",
    )
    parser.add_argument(
        "--compare-src",
        type=Path,
        help="also run each backend, first, from this source tree (git archive BASE | tar -x -C DIR)",
    )
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="add bench/floor_app.py (the events stored, nothing else) to the throughput rounds",
    )
    args = parser.parse_args()

    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    srcs = [None] if args.compare_src is None else [args.compare_src.resolve(), None]
    for kind, src in ((k, s) for k in args.backends.split(",") for s in srcs):
        with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp_:
            tmp = Path(tmp_)
            if kind == "sqlite":
                url = f"sqlite:///{tmp / 'splitwatch.db'}"
                floor_where = str(tmp / "floor.db") if args.floor and src is None else None
                run_backend(kind, url, BareSqlite(tmp / "bare.db"), args, tmp, at, src, floor_where)
                continue
            if kind != "postgresql":
                raise SystemExit(f"unknown backend {kind!r}: sqlite or postgresql")
            suffix = uuid.uuid4().hex[:8]
            url = pg_database(args.pg_url, f"bench_ingest_{suffix}", create=True)
            bare_url = pg_database(args.pg_url, f"bench_ingest_bare_{suffix}", create=True)
            bare = BarePostgres(bare_url)
            names = [f"bench_ingest_{suffix}", f"bench_ingest_bare_{suffix}"]
            floor_where = None
            if args.floor and src is None:
                names.append(f"bench_ingest_floor_{suffix}")
                floor_where = pg_database(args.pg_url, names[-1], create=True)
            try:
                run_backend(kind, url, bare, args, tmp, at, src, floor_where)
            finally:
                bare.close()
                for name in names:
                    pg_database(args.pg_url, name, create=False)
    print(f"overall: {verdict(all(RESULTS))} ({sum(RESULTS)} of {len(RESULTS)} backends meet every bar)")
    if not all(RESULTS):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
