"""`splitwatch serve`: refuses a database behind the migration head; serves one at head."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import free_port

SPLITWATCH = str(Path(sys.executable).with_name("splitwatch"))


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SPLITWATCH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_serve_refuses_an_empty_database_with_the_command_to_run(db_url: str) -> None:
    result = run("serve", "--port", str(free_port()), "--database-url", db_url)
    assert result.returncode != 0
    needs = "is at revision none, code needs 2026_12_01_backend_break: run `splitwatch db upgrade`"
    assert needs in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_refuses_a_database_at_an_older_revision(db_url: str) -> None:
    from sqlalchemy import text

    from app.store.engine import make_engine
    from tests.app.conftest import upgrade

    upgrade(db_url)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '2026_01_01_older'"))
    engine.dispose()
    result = run("serve", "--port", str(free_port()), "--database-url", db_url)
    assert result.returncode != 0
    assert "is at revision 2026_01_01_older" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_reads_the_database_url_from_the_environment(db_url: str) -> None:
    result = run("serve", "--port", str(free_port()), env={"SPLITWATCH_DATABASE_URL": db_url})
    assert result.returncode != 0
    assert db_url in result.stderr


def test_serve_with_an_unsupported_url_says_which_are_supported() -> None:
    result = run("serve", "--database-url", "mysql://x@y/z")
    assert result.returncode == 2
    assert "supports sqlite:/// and postgresql://" in result.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_on_a_migrated_database_answers_and_logs_json_lines(migrated_db_url: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [SPLITWATCH, "serve", "--port", str(port), "--database-url", migrated_db_url],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SPLITWATCH_LOG_LEVEL": "info"},
    )
    try:
        for _ in range(300):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail("server did not answer")
        assert r.status_code == 200
        assert r.json() == {"status": "ready", "revision": "2026_12_01_backend_break"}
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    access = [line for line in lines if line.get("path") == "/readyz"]
    assert access, err
    assert {"time", "level", "msg", "method", "path", "status", "ms"} <= set(access[0])
    assert access[0]["status"] == 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_refuses_several_workers_on_sqlite(migrated_db_url: str) -> None:
    result = run("serve", "--workers", "2", "--database-url", migrated_db_url)
    assert result.returncode == 2
    assert "needs PostgreSQL" in result.stderr


# --------------------------------------------------------------------------- TLS (issue 17)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_over_https_takes_an_agent_that_trusts_the_private_ca(
    migrated_db_url: str, tmp_path: Path
) -> None:
    from agent.fakehost import FakeHost
    from tests.app.conftest import Tokens
    from tests.tls import make_certs

    certs = make_certs(tmp_path / "tls")
    trust = ssl.create_default_context(cafile=str(certs.ca))
    port = free_port()
    proc = subprocess.Popen(
        [
            SPLITWATCH, "serve", "--port", str(port), "--database-url", migrated_db_url,
            "--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                ready = httpx.get(f"{url}/readyz", verify=trust)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail("server did not answer over https")
        assert ready.status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/readyz")  # plain HTTP is not served

        host = FakeHost(tmp_path / "host").cpus(2).boot_messages()
        host.split_lock("java", 100)
        token = Tokens(migrated_db_url).agent("host-1")
        agent = [
            SPLITWATCH, "agent", "--server", url, "--root", str(host.root), "--once", "--no-tracefs",
            "--state-dir", str(tmp_path / "state"),
        ]  # fmt: skip
        env = {"SPLITWATCH_AGENT_TOKEN": token}
        untrusted = run(*agent[1:], env=env)
        assert untrusted.returncode == 0  # a send that failed is retried later, not an error
        assert "TLS certificate is not trusted" in untrusted.stderr and "--ca-file" in untrusted.stderr
        sent = run(*agent[1:], "--ca-file", str(certs.ca), env=env)
        assert sent.returncode == 0, sent.stderr
        assert "every record was sent" in sent.stderr

        viewer = Tokens(migrated_db_url).viewer()
        events = httpx.get(
            f"{url}/api/v1/events",
            params={"host": "host-1", "since": "2000-01-01T00:00:00Z"},
            headers={"Authorization": f"Bearer {viewer}"},
            verify=trust,
        )
        assert [e["comm"] for e in events.json()["items"]] == ["java"]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--ssl-certfile", "CERT"], "--ssl-certfile and --ssl-keyfile go together"),
        (["--ssl-certfile", "/nonexistent.pem", "--ssl-keyfile", "KEY"], "cannot read the TLS files"),
        (["--ssl-certfile", "KEY", "--ssl-keyfile", "KEY"], "not a PEM certificate and its key"),
    ],
)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_with_unusable_tls_files_says_which_and_does_not_start(
    migrated_db_url: str, tmp_path: Path, flags: list[str], says: str
) -> None:
    from tests.tls import make_certs

    certs = make_certs(tmp_path / "tls")
    flags = [{"CERT": str(certs.cert), "KEY": str(certs.key)}.get(f, f) for f in flags]
    result = run("serve", "--port", str(free_port()), "--database-url", migrated_db_url, *flags)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
