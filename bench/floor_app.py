"""The least an ingest server can do and still keep a batch's events (bench_fleet.py --floor).

A Starlette app on the same uvicorn as the bare row: it json-decodes the body, hands the
events' rows to one writer thread and answers after they are committed, as `serve` does. The
writer takes every request waiting, inserts all their rows into the `event` table (the server's
DDL and indexes, no foreign keys: bench_ingest.py's bare connections) and commits once: group
commit, SQLite with the server writer's pragmas and a checkpoint off the commit path,
PostgreSQL through psycopg. Nothing else: no token, no validation, no host, guest, state or
rollup rows, no duplicate detection, no metrics.

It is not a design: it is the floor under any design that stores the events durably in this
engine before answering (SQLite: multi-row INSERTs, as the server's writer does; PostgreSQL:
psycopg's executemany, which pipelines). If this row misses the 0.4 x bare bar, so does every
implementation of the contract on this machine.

Run: python bench/floor_app.py PORT sqlite PATH | postgresql URL
"""

from __future__ import annotations

import asyncio
import functools
import json
import queue
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402
from bench_ingest import EVENT_COLUMNS, BarePostgres, BareSqlite  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

Job = tuple[list[tuple[object, ...]], asyncio.Future[int], asyncio.AbstractEventLoop]


@functools.cache
def sqlite_insert(n_rows: int) -> str:
    values = "(" + ", ".join("?" * 16) + ")"
    return f"INSERT INTO event ({EVENT_COLUMNS}) VALUES " + ", ".join([values] * n_rows)


class Writer:
    """One thread; each pass takes every job waiting and commits them together."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind = kind
        self.where = where
        self.jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self.ready = threading.Event()
        threading.Thread(target=self._run, name="floor-writer", daemon=True).start()
        if kind == "sqlite":
            threading.Thread(target=self._checkpoint, name="floor-checkpoint", daemon=True).start()
        self.ready.wait()

    def _run(self) -> None:
        # bench_ingest's bare baseline connections: the same event table and indexes, and on
        # SQLite the server writer's pragmas. Made here: the connection stays in this thread.
        bare = BareSqlite(Path(self.where)) if self.kind == "sqlite" else BarePostgres(self.where)
        conn = bare.conn
        self.ready.set()
        while True:
            group = [self.jobs.get()]
            while True:
                try:
                    group.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            rows = [row for job in group for row in job[0]]
            if self.kind == "sqlite":
                # One multi-row INSERT per 1000 rows: SQLite's fastest insert from Python, faster
                # than executemany (the server's writer does the same, app/ingest/write.py).
                conn.execute("BEGIN")
                for start in range(0, len(rows), 1000):
                    chunk = rows[start : start + 1000]
                    conn.execute(sqlite_insert(len(chunk)), [v for row in chunk for v in row])
                conn.execute("COMMIT")
            else:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(bare.sql, rows)
            for job_rows, future, loop in group:
                loop.call_soon_threadsafe(future.set_result, len(job_rows))

    def _checkpoint(self) -> None:
        # The server's helper thread: the WAL is folded back once a second, not in a commit.
        self.ready.wait()
        conn = sqlite3.connect(self.where, isolation_level=None)
        while True:
            time.sleep(1)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def make_app(writer: Writer) -> Starlette:
    hosts: dict[str, int] = {}
    text_times = writer.kind == "sqlite"

    async def ingest(request: Request) -> Response:
        body = json.loads(await request.body())
        host = body["host"]
        host_id = hosts.setdefault(host["name"], len(hosts) + 1)
        now = datetime.now(UTC)
        received: object = now.strftime("%Y-%m-%d %H:%M:%S.%f") if text_times else now
        rows = [
            (
                host_id, host["boot_id"], e["source"], e["seq"],
                e["time"] if text_times else datetime.fromisoformat(e["time"]),
                received, e["kind"], e["comm"], e["tid"], e["tgid"], e["address"], e["count"],
                e["action"], None, (e["guest"] or {}).get("vcpu"), (e["guest"] or {}).get("vmm"),
            )
            for e in body["events"]
        ]  # fmt: skip
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        writer.jobs.put((rows, future, loop))
        return JSONResponse({"accepted": await future, "duplicates": 0})

    async def ready(_request: Request) -> Response:
        return JSONResponse({"ready": True})

    return Starlette(routes=[Route("/api/v1/ingest", ingest, methods=["POST"]), Route("/readyz", ready)])


def main() -> None:
    port, kind, where = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    app = make_app(Writer(kind, where))
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False, proxy_headers=True)


if __name__ == "__main__":
    main()
