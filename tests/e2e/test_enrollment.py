"""Fleet enrollment end to end (#15): one enrollment token, hundreds of hosts, each writing only
as itself. The agent's own enrollment code (agent/enroll.py) over real HTTP against a real
uvicorn, and real `splitwatch agent --enroll-token FILE` processes on fake hosts."""

from __future__ import annotations

import os
import stat
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.collect import Collector
from agent.enroll import EnrollError, obtain_token, token_path
from agent.fakehost import FakeHost
from agent.transport import Sent, Transport
from tests.app.conftest import Server, Tokens, assert_error, auth
from tests.e2e.conftest import SPLITWATCH, AgentProcess, Agents, Api, wait_until

pytestmark = pytest.mark.slow

FLEET = 200


def admin_post(server: Server, admin: str, path: str, **body: Any) -> dict[str, Any]:
    answer = httpx.post(server.url + path, json=body, headers=auth(admin), timeout=30)
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


def fake_host(tmp_path: Path, name: str, machine: int | None = None) -> FakeHost:
    host = FakeHost(tmp_path / name, hostname=name, live=True).cpus(1).mode("warn").boot_messages()
    if machine is not None:
        (host.root / "etc").mkdir(exist_ok=True)
        (host.root / "etc/machine-id").write_text(f"{machine:032x}\n")
    return host


def comm_of(i: int) -> str:
    return f"job{i}"  # unique per host: an event under the wrong host would show it


def test_200_hosts_enroll_with_one_token_and_every_event_lands_under_its_own_host(
    tmp_path: Path, backend: Server, tokens: Tokens, api: Api
) -> None:
    enroll = admin_post(backend, tokens.admin(), "/api/v1/tokens", role="enroll", host_glob="kvm-*",
                        max_uses=FLEET, expires_in="1h")  # fmt: skip
    hosts = [fake_host(tmp_path, f"kvm-{i:03d}", machine=i + 1) for i in range(FLEET)]
    for i, host in enumerate(hosts):
        host.split_lock(comm_of(i), 1000 + i)
        host.split_lock(comm_of(i), 1000 + i, address="0x401140")

    def enroll_and_send(i: int) -> tuple[str, int]:
        state = tmp_path / "state" / hosts[i].hostname
        raw = obtain_token(
            server=backend.url,
            enroll_token_file=None,
            enroll_token=enroll["token"],
            state_dir=state,
            root=hosts[i].root,
            once=True,
        )
        collector = Collector(hosts[i].root, None, use_tracefs=False)
        transport = Transport(backend.url, raw, timeout_s=30)
        try:
            accepted = 0
            for payload in collector.collect().payloads:
                result = transport.post(payload.to_json().encode())
                assert isinstance(result, Sent), result
                accepted += result.accepted
        finally:
            collector.close()
            transport.close()
        return raw, accepted

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(enroll_and_send, range(FLEET)))
    assert [accepted for _raw, accepted in results] == [2] * FLEET
    assert len({raw for raw, _ in results}) == FLEET  # every host has its own token
    for i, host in enumerate(hosts):
        path = token_path(tmp_path / "state" / host.hostname)
        assert path.read_text().strip() == results[i][0]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    events = api._get("/api/v1/events", since="2000-01-01T00:00:00Z", limit=1000)["items"]
    assert len(events) == 2 * FLEET
    by_host = Counter((e["host"], e["comm"]) for e in events)
    assert by_host == Counter({(f"kvm-{i:03d}", comm_of(i)): 2 for i in range(FLEET)})
    listed = httpx.get(backend.url + "/api/v1/tokens", params={"role": "enroll"},
                       headers=auth(tokens.admin()), timeout=30).json()["items"]  # fmt: skip
    assert listed[0]["uses"] == FLEET

    # The next host is one too many for max_uses: refused, with the reason, by the agent's code.
    extra = fake_host(tmp_path, "kvm-999", machine=999)
    with pytest.raises(EnrollError, match=f"used {FLEET} of {FLEET} times"):
        obtain_token(server=backend.url, enroll_token_file=None, enroll_token=enroll["token"],
                     state_dir=tmp_path / "state" / "kvm-999", root=extra.root, once=True)  # fmt: skip
    assert not token_path(tmp_path / "state" / "kvm-999").exists()


def test_an_enrolled_host_cannot_write_as_another_host(
    tmp_path: Path, backend: Server, tokens: Tokens
) -> None:
    enroll = admin_post(backend, tokens.admin(), "/api/v1/tokens", role="enroll")
    one, two = fake_host(tmp_path, "kvm-1", 1), fake_host(tmp_path, "kvm-2", 2)
    raw = obtain_token(server=backend.url, enroll_token_file=None, enroll_token=enroll["token"],
                       state_dir=tmp_path / "s1", root=one.root, once=True)  # fmt: skip
    two.split_lock("evil", 66)
    collector = Collector(two.root, None, use_tracefs=False)
    payload = collector.collect().payloads[0]
    collector.close()
    answer = httpx.post(f"{backend.url}/api/v1/ingest", content=payload.to_json(), headers=auth(raw))
    error = assert_error(answer, 403, "wrong_host")
    assert "'kvm-1', not 'kvm-2'" in error["message"]


def enrolling_agent(agents: Agents, host: FakeHost, enroll_file: Path | None, *extra: str) -> AgentProcess:
    base = agents.tmp_path / f"agent-{host.hostname}"
    args = [
        str(SPLITWATCH), "agent", "--server", agents.server_url, "--root", str(host.root),
        "--interval", "0.2", "--state-dir", str(base / "state"), "--no-tracefs", *extra,
    ]  # fmt: skip
    if enroll_file is not None:
        args += ["--enroll-token", str(enroll_file)]
    agent = AgentProcess(args, agents.tmp_path / f"agent-{host.hostname}.stderr").start()
    agents.running.append(agent)
    return agent


def test_agent_processes_enroll_once_keep_their_token_and_stop_when_it_is_revoked(
    tmp_path: Path, backend: Server, tokens: Tokens, agents: Agents, api: Api
) -> None:
    admin = tokens.admin()
    enroll = admin_post(backend, admin, "/api/v1/tokens", role="enroll", host_glob="kvm-*", max_uses=3)
    enroll_file = tmp_path / "enroll-token"
    enroll_file.write_text(enroll["token"] + "\n")
    enroll_file.chmod(0o600)
    hosts = [fake_host(tmp_path, f"kvm-{i}", machine=100 + i) for i in range(3)]
    for i, host in enumerate(hosts):
        host.split_lock(comm_of(i), 500 + i)
    running = [enrolling_agent(agents, host, enroll_file) for host in hosts]
    for i, host in enumerate(hosts):
        wait_until(lambda h=host: len(api.events(h.hostname)) == 1, f"{host.hostname}'s first event")
        assert [e["comm"] for e in api.events(host.hostname)] == [comm_of(i)]
        assert f"enrolled as host {host.hostname}" in running[i].stderr
        assert stat.S_IMODE(token_path(tmp_path / f"agent-{host.hostname}/state").stat().st_mode) == 0o600
    assert all(agent.terminate() == 0 for agent in running)

    # The enrollment token is gone (revoked, file deleted): restarted agents use their own tokens.
    assert httpx.delete(f"{backend.url}/api/v1/tokens/{enroll['id']}", headers=auth(admin)).status_code == 204
    enroll_file.unlink()
    running = [enrolling_agent(agents, host, None) for host in hosts]
    for i, host in enumerate(hosts):
        host.split_lock(comm_of(i), 500 + i, address="0x401150")
        wait_until(lambda h=host: len(api.events(h.hostname)) == 2, f"{host.hostname}'s event after restart")
        assert running[i].stderr.count("enrolled as host") == 1  # the first run only

    # An admin revokes kvm-0's token: that agent says so and stops sending; the others go on.
    revoked = httpx.delete(f"{backend.url}/api/v1/hosts/kvm-0/token", headers=auth(admin), timeout=30)
    assert revoked.status_code == 200
    for i, host in enumerate(hosts):
        host.split_lock(comm_of(i), 500 + i, address="0x401160")
    wait_until(lambda: "enrolled agent token" in running[0].stderr, "kvm-0 to say its token was refused")
    assert "an admin revoked or re-keyed it" in running[0].stderr
    for host in hosts[1:]:
        wait_until(lambda h=host: len(api.events(h.hostname)) == 3, f"{host.hostname} to keep sending")
    assert len(api.events("kvm-0")) == 2
    assert all(agent.terminate() == 0 for agent in running)


@pytest.mark.parametrize("why", ["expired", "revoked", "pattern"])
def test_agent_with_a_refused_enrollment_token_says_why_and_exits_1_with_once(
    tmp_path: Path, backend: Server, tokens: Tokens, agents: Agents, why: str
) -> None:
    admin = tokens.admin()
    enroll = admin_post(backend, admin, "/api/v1/tokens", role="enroll", host_glob="db-*")
    if why == "expired":
        from sqlalchemy import update

        from app.store.engine import make_engine
        from app.store.tables import token

        engine = make_engine(backend.settings.database_url)
        with engine.begin() as conn:
            past = token.c.created_at
            conn.execute(update(token).where(token.c.id == enroll["id"]).values(expires_at=past))
        engine.dispose()
    if why == "revoked":
        httpx.delete(f"{backend.url}/api/v1/tokens/{enroll['id']}", headers=auth(admin))
    host = fake_host(tmp_path, "db-1" if why != "pattern" else "kvm-1", machine=7)
    enroll_file = tmp_path / "enroll-token"
    enroll_file.write_text(enroll["token"])
    agent = enrolling_agent(agents, host, enroll_file, "--once")
    assert agent.proc is not None and agent.proc.wait(timeout=60) == 1
    says = {"expired": "expired at", "revoked": "was revoked", "pattern": "does not match"}[why]
    assert "enrollment of host" in agent.stderr and says in agent.stderr, agent.stderr
    assert not token_path(tmp_path / f"agent-{host.hostname}/state").exists()


def test_enrollment_waits_for_an_unreachable_backend_and_enrolls_when_it_is_back(
    tmp_path: Path, backend: Server, tokens: Tokens
) -> None:
    enroll = admin_post(backend, tokens.admin(), "/api/v1/tokens", role="enroll")
    host = fake_host(tmp_path, "kvm-late", machine=5)
    backend.stop()
    waits: list[float] = []

    def sleep(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == 3:
            backend.start()
        return False

    raw = obtain_token(server=backend.url, enroll_token_file=None, enroll_token=enroll["token"],
                       state_dir=tmp_path / "state", root=host.root, sleep=sleep,
                       stop=threading.Event())  # fmt: skip
    assert waits == [2.0, 4.0, 8.0]  # backoff while unreachable
    assert raw.startswith("sw_") and token_path(tmp_path / "state").read_text().strip() == raw
    assert os.stat(tmp_path / "state").st_mode & 0o077 == 0


def _make_ca_and_server_cert(tmp: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 it signed (openssl, as an admin would)."""
    import subprocess

    ca_key, ca, key, csr, cert = (tmp / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    ext = tmp / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    for cmd in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "2", "-subj", "/CN=splitwatch test CA"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True)
    return ca, cert, key


def test_enrollment_over_https_verifies_the_servers_certificate(
    tmp_path: Path, backend: Server, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import time

    import uvicorn

    from app.main import create_app
    from tests.app.conftest import free_port

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: it makes the test's certificates")
    ca, cert, key = _make_ca_and_server_cert(tmp_path)
    enroll = admin_post(backend, tokens.admin(), "/api/v1/tokens", role="enroll")
    backend.stop()  # the same database, now served over TLS
    port = free_port()
    config = uvicorn.Config(
        create_app(backend.settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "TLS uvicorn did not start"
            time.sleep(0.01)
        host = fake_host(tmp_path, "kvm-tls", machine=9)
        url = f"https://127.0.0.1:{port}"
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        with pytest.raises(EnrollError, match="certificate"):
            obtain_token(server=url, enroll_token_file=None, enroll_token=enroll["token"],
                         state_dir=tmp_path / "state", root=host.root, once=True)  # fmt: skip
        assert not token_path(tmp_path / "state").exists()
        # --ca-file (issue 17): the private CA for enrollment as for every send.
        raw = obtain_token(server=url, enroll_token_file=None, enroll_token=enroll["token"],
                           state_dir=tmp_path / "state", root=host.root, once=True, ca_file=ca)  # fmt: skip
        assert raw.startswith("sw_")
        token_path(tmp_path / "state").unlink()  # enroll again (same machine: a fresh token)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the admin's CA, as docs/agent.md says
        raw = obtain_token(server=url, enroll_token_file=None, enroll_token=enroll["token"],
                           state_dir=tmp_path / "state", root=host.root, once=True)  # fmt: skip
        assert raw.startswith("sw_")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
