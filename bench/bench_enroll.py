"""Fleet enrollment and bulk tokens (#15): how fast a fleet gets its agent tokens.

1. Enrollments per second: --hosts distinct hosts trade one enrollment token for their own agent
   token through the agent's own client (agent/enroll.py, http.client) against a real
   `splitwatch serve` (uvicorn, its own process), --concurrency at a time; p50/p99 latency.
2. `splitwatch token create --hosts-file F` for --names names (10,000), run as the user runs it
   (one process, startup included): tokens per second.
3. The same-run baseline: `splitwatch token create --role agent --host NAME`, one process per
   token, as the only way before #15; run --singles times, the mean scaled to --names tokens.
   The ratio is (2) over (3) in tokens per second.

Run: .venv/bin/python bench/bench_enroll.py [--hosts 500] [--names 10000] [--singles 5]
     [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/NAME] (default: a SQLite file)
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.enroll import Enrolled, Identity, request_agent_token  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def last_line(cmd: list[str], env: dict[str, str]) -> str:
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=500, help="hosts that enroll over HTTP")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--names", type=int, default=10_000, help="names in the --hosts-file")
    parser.add_argument("--singles", type=int, default=5, help="one-process-per-token runs (baseline)")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()

    splitwatch = str(Path(sys.executable).with_name("splitwatch"))
    with tempfile.TemporaryDirectory(prefix="bench_enroll_") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'splitwatch.db'}"
        env = {**os.environ, "SPLITWATCH_DATABASE_URL": url, "SPLITWATCH_LOG_LEVEL": "warning"}
        subprocess.run([splitwatch, "db", "upgrade"], env=env, check=True, capture_output=True)
        admin = last_line([splitwatch, "token", "create", "--role", "admin"], env)

        port = free_port()
        server = subprocess.Popen(
            [splitwatch, "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(400):
                try:
                    if httpx.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            else:
                raise SystemExit("server did not become ready")
            made = httpx.post(
                f"{base}/api/v1/tokens",
                json={"role": "enroll", "host_glob": "bench-*", "max_uses": args.hosts, "expires_in": "1h"},
                headers={"Authorization": f"Bearer {admin}"},
            )
            made.raise_for_status()
            enroll_token = made.json()["token"]

            # 1. Enrollments through the agent's own client.
            def enroll(i: int) -> float:
                identity = Identity(f"bench-{i:05d}", f"boot-{i}", f"{i + 1:032x}")
                start = time.perf_counter()
                outcome = request_agent_token(base, enroll_token, identity, timeout_s=60)
                if not isinstance(outcome, Enrolled):
                    raise SystemExit(f"enrollment {i} failed: {outcome}")
                return time.perf_counter() - start

            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                latencies = sorted(pool.map(enroll, range(args.hosts)))
            enroll_s = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(timeout=30)

        # 2. --hosts-file, one process.
        names = Path(tmp) / "hosts.txt"
        names.write_text("".join(f"fleet-{i:05d}\n" for i in range(args.names)))
        start = time.perf_counter()
        out = subprocess.run(
            [splitwatch, "token", "create", "--hosts-file", str(names)],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        bulk_s = time.perf_counter() - start
        rows = list(csv.reader(io.StringIO(out.stdout)))
        assert len(rows) == args.names + 1 and rows[0] == ["host", "token"], "unexpected --hosts-file output"

        # 3. Baseline: one process per token.
        singles = []
        for i in range(args.singles):
            start = time.perf_counter()
            last_line([splitwatch, "token", "create", "--role", "agent", "--host", f"single-{i}"], env)
            singles.append(time.perf_counter() - start)

    engine = url.split(":", 1)[0] if args.database_url else "sqlite"
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    single_s = statistics.mean(singles)
    bulk_rate = args.names / bulk_s
    single_rate = 1 / single_s
    print(f"engine: {engine}")
    print(
        f"enrollments: {args.hosts} hosts, {args.concurrency} at a time, in {enroll_s:.2f} s = "
        f"{args.hosts / enroll_s:.0f} enrollments/s (p50 {p50:.1f} ms, p99 {p99:.1f} ms)"
    )
    print(
        f"token create --hosts-file: {args.names} tokens in {bulk_s:.2f} s (one process) = "
        f"{bulk_rate:.0f} tokens/s"
    )
    print(
        f"baseline, one process per token: {single_s:.2f} s each (mean of {args.singles}) = "
        f"{single_rate:.2f} tokens/s; {args.names} tokens would take {single_s * args.names / 60:.0f} min"
    )
    print(f"ratio --hosts-file / one-process-per-token: {bulk_rate / single_rate:.0f}x")


if __name__ == "__main__":
    main()
