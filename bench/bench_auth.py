"""Token authentication in process: a cache hit against a lookup, and the lookup statement.

Steady-state ingest authenticates every request (app/auth.py). This measures, on a real
database (a fresh SQLite file, or a fresh PostgreSQL database with --pg), in one process:
  1. `Authenticator.authenticate_async` answered from the cache (hit), µs of CPU per call;
  2. the same with the cache off (miss: the lookup in a worker thread), µs per call;
  3. `find_token_by_hash` (statement built once) against the same-run baseline of the
     statement built per call, as it was before: µs per call and the ratio;
  4. one revocation poll (`Authenticator.poll_once`) over --tokens cached tokens, ms per poll
     (skipped on a tree without it).

CPU is process_time (all threads: the miss's worker thread counts), so the figures are the
server's CPU per authentication, not wall time on a shared machine.

Run: .venv/bin/python bench/bench_auth.py [--calls 3000] [--tokens 1000] [--pg [URL]]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Connection, Engine, and_, make_url, or_, select  # noqa: E402

from app.auth import Authenticator  # noqa: E402
from app.store.engine import make_engine  # noqa: E402
from app.store.tables import token  # noqa: E402
from app.store.tokens import _COLUMNS, create_agent_tokens, find_token_by_hash, hash_token  # noqa: E402

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _upgrade(url: str) -> None:
    from app.store.schema_check import migrate

    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


@contextmanager
def database(pg: str | None) -> Iterator[str]:
    if pg is None:
        with tempfile.TemporaryDirectory(prefix="bench_auth_") as tmp:
            url = f"sqlite:///{Path(tmp) / 'splitwatch.db'}"
            _upgrade(url)
            yield url
        return
    import psycopg

    server = make_url(pg)
    name = f"sw_bench_auth_{secrets.token_hex(4)}"
    admin = dict(host=server.host, port=server.port, user=server.username, dbname=server.database)
    with psycopg.connect(**admin, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(f"CREATE DATABASE {name}")
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        _upgrade(url)
        yield url
    finally:
        with psycopg.connect(**admin, autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _per_call_statement(conn: Connection, digest: str) -> Any:
    """The lookup as it was before: the statement constructed on every call (the baseline)."""
    now = datetime.now(UTC)
    live = and_(token.c.revoked_at.is_(None), or_(token.c.expires_at.is_(None), token.c.expires_at > now))
    return conn.execute(select(*_COLUMNS).where(token.c.hash == digest, live)).first()


def cpu_us(fn: Callable[[], object], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


async def async_cpu_us(auth: Authenticator, raws: list[str], calls: int) -> float:
    start = time.process_time()
    for i in range(calls):
        await auth.authenticate_async(raws[i % len(raws)])
    return (time.process_time() - start) / calls * 1e6


def _authenticator(engine: Engine, ttl: float) -> Authenticator:
    return Authenticator(engine, touch_interval_s=1e9, touch=lambda _fn: None, cache_ttl_s=ttl)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--tokens", type=int, default=1000, help="agent tokens made and cached")
    parser.add_argument(
        "--pg", nargs="?", const=PG_DEFAULT, default=None, help=f"PostgreSQL (default {PG_DEFAULT})"
    )
    args = parser.parse_args()

    with database(args.pg) as url:
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                pairs = create_agent_tokens(conn, [f"host-{i}" for i in range(args.tokens)])
            raws = [raw for _name, raw in pairs]
            backend = "postgresql" if args.pg else "sqlite"
            print(f"{backend}: {args.tokens} agent tokens, {args.calls} calls per figure")

            hit = _authenticator(engine, 300.0)
            miss = _authenticator(engine, 0.0)
            asyncio.run(async_cpu_us(hit, raws, len(raws)))  # fill the cache, warm both paths
            asyncio.run(async_cpu_us(miss, raws, 50))
            hit_us = asyncio.run(async_cpu_us(hit, raws, args.calls))
            miss_us = asyncio.run(async_cpu_us(miss, raws, args.calls))
            print(f"  authenticate_async hit   {hit_us:8.1f} µs CPU/call")
            print(f"  authenticate_async miss  {miss_us:8.1f} µs CPU/call  ({miss_us / hit_us:.0f}x the hit)")

            digests = [hash_token(r) for r in raws]
            with engine.connect() as conn:
                i = iter(range(10**9))
                old = cpu_us(lambda: _per_call_statement(conn, digests[next(i) % len(digests)]), args.calls)
                new = cpu_us(lambda: find_token_by_hash(conn, digests[next(i) % len(digests)]), args.calls)
                old2 = cpu_us(lambda: _per_call_statement(conn, digests[next(i) % len(digests)]), args.calls)
                new2 = cpu_us(lambda: find_token_by_hash(conn, digests[next(i) % len(digests)]), args.calls)
            old, new = min(old, old2), min(new, new2)
            print(f"  lookup, statement per call (baseline) {old:8.1f} µs CPU/call")
            print(
                f"  find_token_by_hash                    {new:8.1f} µs CPU/call  ({old / new:.2f}x faster)"
            )

            poll = getattr(hit, "poll_once", None)
            if poll is not None:
                polls = 20
                start = time.process_time()
                for _ in range(polls):
                    poll()
                per_poll = (time.process_time() - start) / polls * 1e3
                print(f"  poll_once over {args.tokens} cached tokens {per_poll:8.2f} ms CPU/poll")
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
