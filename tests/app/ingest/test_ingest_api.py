"""POST /api/v1/ingest through a real uvicorn, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from agent.payload import Action, GapReason, HostInfo, Payload, Source
from app.settings import Settings
from app.store.tables import event, gap, guest, host, host_state, rollup_1h, rollup_1m, token
from tests.app.conftest import Server, Tokens, assert_error, auth
from tests.app.ingest.payloads import T0, events, host_info, payload, state
from tests.app.ingest.payloads import event as ev
from tests.app.ingest.payloads import gap as mkgap

URL = "/api/v1/ingest"


def send(client: httpx.Client, tok: str, body: Payload | bytes | str, **headers: str) -> httpx.Response:
    content = body.to_json().encode() if isinstance(body, Payload) else body
    return client.post(
        URL, content=content, headers={**auth(tok), "Content-Type": "application/json", **headers}
    )


def snapshot(engine: Engine) -> dict[str, Any]:
    """Everything a resend must not change."""
    with engine.connect() as conn:
        return {
            "events": conn.execute(
                select(event.c.source, event.c.seq, event.c.count).order_by(event.c.seq)
            ).all(),
            "rollup_1m": conn.execute(
                select(rollup_1m).order_by(*[c for c in rollup_1m.c if c.name not in ("count", "events")])
            ).all(),
            "rollup_1h": conn.execute(
                select(rollup_1h).order_by(*[c for c in rollup_1h.c if c.name not in ("count", "events")])
            ).all(),
            "guests": conn.execute(select(guest).order_by(guest.c.name)).all(),
            "gaps": conn.execute(select(gap.c.first_seq, gap.c.reason, gap.c.count)).all(),
            "states": conn.execute(select(host_state.c.id, host_state.c.mode)).all(),
        }


def scalar(engine: Engine, query: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(query).scalar()


# ----------------------------------------------------------------------------- storing


def test_batch_is_stored_and_the_answer_counts_accepted_events(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    r = send(client, tokens.agent(), payload(events(0, 10), state(), [mkgap(100, 104)]))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 10, "duplicates": 0}
    assert scalar(engine, select(func.count()).select_from(event)) == 10
    assert scalar(engine, select(func.sum(rollup_1m.c.count))) == 10
    assert scalar(engine, select(func.sum(rollup_1h.c.count))) == 10
    assert scalar(engine, select(func.count()).select_from(gap)) == 1


def test_same_batch_sent_twice_is_all_duplicates_and_changes_nothing(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    batch = payload(events(0, 50), state(), [mkgap(100, 104)])
    assert send(client, tok, batch).json() == {"accepted": 50, "duplicates": 0}
    before = snapshot(engine)
    assert send(client, tok, batch).json() == {"accepted": 0, "duplicates": 50}
    assert snapshot(engine) == before


def test_batches_arriving_out_of_order_store_every_event_once(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    first = payload(events(0, 20), state(T0))
    second = payload(events(20, 20, at=T0 + timedelta(hours=2)), state(T0 + timedelta(hours=2)))
    overlapping = payload(events(10, 20, at=T0 + timedelta(minutes=5)))
    assert send(client, tok, second).json()["accepted"] == 20
    assert send(client, tok, first).json()["accepted"] == 20
    assert send(client, tok, overlapping).json() == {"accepted": 0, "duplicates": 20}
    with engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(select(event.c.seq).order_by(event.c.seq))]
        current = conn.execute(select(host.c.state_observed_at)).scalar()
    assert seqs == list(range(40))
    assert scalar(engine, select(func.sum(rollup_1m.c.count))) == 40
    assert scalar(engine, select(func.sum(rollup_1h.c.count))) == 40
    assert current == T0 + timedelta(hours=2)  # the older state did not win


def test_events_of_a_new_boot_with_the_same_seq_are_new_events(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    send(client, tok, payload(events(0, 5)))
    r = send(client, tok, payload(events(0, 5), host=host_info(boot_id="boot-2")))
    assert r.json() == {"accepted": 5, "duplicates": 0}


def test_rollups_hold_the_sum_of_event_counts_per_minute(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    evs = [ev(1, T0, count=5), ev(2, T0 + timedelta(seconds=30), count=2), ev(3, T0 + timedelta(minutes=1))]
    send(client, tokens.agent(), payload(evs))
    with engine.connect() as conn:
        rows = conn.execute(select(rollup_1m.c.bucket, rollup_1m.c.count, rollup_1m.c.events)).all()
    assert sorted(rows) == [(T0, 7, 2), (T0 + timedelta(minutes=1), 1, 1)]


# ----------------------------------------------------------------------------- hosts and guests


def test_state_history_gets_a_row_only_when_the_state_changes(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    on = (True, True, True, True)
    for i in range(3):
        send(client, tok, payload(st=state(T0 + timedelta(seconds=10 * i), sld_on=on)))
    send(client, tok, payload(st=state(T0 + timedelta(seconds=40), mitigate=0, sld_on=on)))
    send(client, tok, payload(st=state(T0 + timedelta(seconds=50), mitigate=0, sld_on=on)))
    with engine.connect() as conn:
        rows = conn.execute(
            select(host_state.c.observed_at, host_state.c.mitigate).order_by(host_state.c.id)
        ).all()
    assert rows == [(T0, 1), (T0 + timedelta(seconds=40), 0)]


def test_the_agents_verdict_is_stored_with_since_and_each_change_recorded_in_history(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    off = (True, False, True, True)
    verdicts = ["transient", "transient", "drift", "drift"]
    for i, verdict in enumerate(verdicts):
        at = T0 + timedelta(seconds=10 * i)
        send(client, tok, payload(st=state(at, sld_on=off, verdict=verdict, details={"cpus": [1]})))
    with engine.connect() as conn:
        h = conn.execute(
            select(host.c.verdict, host.c.verdict_reason, host.c.verdict_details, host.c.verdict_since)
        ).one()
        history = conn.execute(select(host_state.c.verdict).order_by(host_state.c.id)).scalars().all()
    assert (h.verdict, h.verdict_reason, h.verdict_details) == ("drift", "the agent's words", {"cpus": [1]})
    assert h.verdict_since == T0 + timedelta(seconds=20)  # when it became drift
    assert history == ["transient", "drift"]


def test_an_older_sample_arriving_late_changes_history_only_not_the_current_verdict(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    send(client, tok, payload(st=state(T0 + timedelta(seconds=30), verdict="consistent")))
    send(client, tok, payload(st=state(T0, sld_on=(True, False, True, True), verdict="drift")))
    assert scalar(engine, select(host.c.verdict)) == "consistent"


def test_a_state_without_a_verdict_clears_it_to_unknown(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    send(client, tok, payload(st=state(T0, verdict="drift")))
    send(client, tok, payload(st=state(T0 + timedelta(seconds=9))))
    with engine.connect() as conn:
        h = conn.execute(select(host.c.verdict, host.c.verdict_since)).one()
    assert (h.verdict, h.verdict_since) == (None, None)


def test_a_verdict_the_agent_cannot_send_is_refused_with_a_reason(
    client: httpx.Client, tokens: Tokens
) -> None:
    body = payload(st=state(T0, verdict="drift")).to_dict()
    body["state"]["consistency"]["verdict"] = "ok"
    response = client.post("/api/v1/ingest", json=body, headers={"Authorization": f"Bearer {tokens.agent()}"})
    assert response.status_code == 422
    assert "consistency" in response.text


def test_a_guest_killed_without_a_kernel_line_is_killed_by_its_vmm_exit(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    killed = payload([ev(1, T0, guest="ci-build-08", action=Action.SIGBUS)]).to_dict()
    killed["events"][0]["evidence"] = "vmm_exit"
    response = client.post("/api/v1/ingest", json=killed, headers={"Authorization": f"Bearer {tok}"})
    assert response.status_code == 200, response.text
    with engine.connect() as conn:
        g = conn.execute(select(guest.c.killed_at, guest.c.killed_by)).one()
    assert (g.killed_at, g.killed_by) == (T0, "vmm_exit")


def test_guest_killed_by_sigbus_is_marked_killed_with_the_time(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    send(client, tok, payload([ev(1, T0, guest="db-7")]))
    send(client, tok, payload([ev(2, T0 + timedelta(minutes=3), guest="db-7", action=Action.SIGBUS)]))
    send(client, tok, payload([ev(0, T0 - timedelta(minutes=3), guest="db-7")]))  # late, older
    with engine.connect() as conn:
        g = conn.execute(select(guest).where(guest.c.name == "db-7")).one()
    assert g.killed_at == T0 + timedelta(minutes=3)
    assert g.last_action == "sigbus"
    assert g.first_seen_at == T0 - timedelta(minutes=3)
    assert g.last_seen_at == T0 + timedelta(minutes=3)
    assert g.uuid == "uuid-db-7"


def test_guest_seen_on_a_second_host_records_that_host_as_its_last(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    send(client, tokens.agent("host-1"), payload([ev(1, T0, guest="mover")]))
    r = send(
        client,
        tokens.agent("host-2"),
        payload([ev(1, T0 + timedelta(hours=1), guest="mover")], host=host_info("host-2")),
    )
    assert r.json()["accepted"] == 1
    with engine.connect() as conn:
        last = conn.execute(
            select(host.c.name).join(guest, guest.c.last_host_id == host.c.id).where(guest.c.name == "mover")
        ).scalar()
    assert last == "host-2"


def test_health_figures_of_the_newest_batch_are_kept(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    body = json.loads(payload().to_json())
    body["health"] = {"spool_bytes": 4096}
    assert send(client, tokens.agent(), json.dumps(body).encode()).status_code == 200
    assert scalar(engine, select(host.c.health)) == {"spool_bytes": 4096}


def _host_view(client: httpx.Client, tokens: Tokens) -> dict[str, Any]:
    r = client.get("/api/v1/hosts/host-1", headers=auth(tokens.viewer()))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize(
    ("sld_on", "verdict"),
    [((True, True, True, True), "consistent"), ((True, False, True, True), "drift")],
    ids=["consistent", "drift"],
)
def test_batches_without_state_keep_the_host_alive_and_its_state_and_status_as_they_were(
    client: httpx.Client, tokens: Tokens, engine: Engine, sld_on: tuple[bool, ...], verdict: str
) -> None:
    # #13: the agent sends `state: null` while its state has not changed; #16: the status is the
    # verdict of the last state the agent sent, and a state-less batch leaves it as it was.
    tok = tokens.agent()
    for i in range(3):
        at = T0 + timedelta(seconds=10 * i)
        send(client, tok, payload(events(10 * i, 2, at), state(at, sld_on=sld_on, verdict=verdict)))
    before = _host_view(client, tokens)
    seen_before = scalar(engine, select(host.c.last_seen_at))
    states_before = scalar(engine, select(func.count()).select_from(host_state))
    with engine.connect() as conn:
        held = conn.execute(select(host.c.state_observed_at, host.c.cpus, host.c.mode)).one()
    for i in range(3, 6):
        r = send(client, tok, payload(events(10 * i, 2, T0 + timedelta(seconds=10 * i)), None))
        assert r.json() == {"accepted": 2, "duplicates": 0}
    after = _host_view(client, tokens)
    assert before["status"] == verdict
    assert after["status"] == before["status"]
    assert scalar(engine, select(host.c.last_seen_at)) > seen_before
    assert scalar(engine, select(func.count()).select_from(host_state)) == states_before
    with engine.connect() as conn:
        assert conn.execute(select(host.c.state_observed_at, host.c.cpus, host.c.mode)).one() == held
    assert scalar(engine, select(func.count()).select_from(event)) == 12


def test_gaps_are_stored_once(client: httpx.Client, tokens: Tokens, engine: Engine) -> None:
    tok = tokens.agent()
    gaps = [mkgap(10, 19), mkgap(10, 19, GapReason.SUPPRESSED), mkgap(30, 30)]
    send(client, tok, payload(gaps=gaps))
    send(client, tok, payload(gaps=gaps))
    assert scalar(engine, select(func.count()).select_from(gap)) == 3


def identity(engine: Engine) -> tuple[str, str, str]:
    with engine.connect() as conn:
        row = conn.execute(select(host.c.boot_id, host.c.kernel, host.c.agent_version)).one()
    return row.boot_id, row.kernel, row.agent_version


def imported(first_seq: int, n: int, info: HostInfo) -> Payload:
    """What `splitwatch import` sends: source "import" events, no state."""
    evs = [replace(e, source=Source.IMPORT) for e in events(first_seq, n)]
    return payload(evs, host=info)


def test_import_of_old_logs_does_not_overwrite_the_hosts_current_identity(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    assert (
        send(
            client, tok, payload(events(0, 3), state(), host=host_info(boot_id="boot-9", kernel="6.8.0"))
        ).status_code
        == 200
    )
    old = HostInfo(
        name="host-1", boot_id="boot-old", kernel="5.15.0", cpu_model="Intel Xeon", agent_version="0.0.9"
    )
    r = send(client, tok, imported(0, 5, old))
    assert r.json() == {"accepted": 5, "duplicates": 0}
    assert identity(engine) == ("boot-9", "6.8.0", "0.1.0")
    with engine.connect() as conn:  # the imported events keep the boot they came from
        boots = conn.execute(select(event.c.boot_id, func.count()).group_by(event.c.boot_id)).all()
    assert sorted(boots) == [("boot-9", 3), ("boot-old", 5)]


def test_import_of_old_logs_does_not_make_a_silent_host_look_alive(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    send(client, tok, payload(events(0, 1), state(), host=host_info()))
    with engine.connect() as conn:
        agent_seen = conn.execute(select(host.c.last_seen_at)).scalar_one()
    assert send(client, tok, imported(100, 3, host_info())).json() == {"accepted": 3, "duplicates": 0}
    with engine.connect() as conn:
        assert conn.execute(select(host.c.last_seen_at)).scalar_one() == agent_seen


def test_import_for_a_host_not_seen_yet_creates_it_with_the_imports_identity(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    old = HostInfo(
        name="host-1", boot_id="boot-old", kernel="5.15.0", cpu_model="Intel Xeon", agent_version="0.0.9"
    )
    assert send(client, tokens.agent(), imported(0, 2, old)).json() == {"accepted": 2, "duplicates": 0}
    assert identity(engine) == ("boot-old", "5.15.0", "0.0.9")


def test_batch_mixing_import_and_kmsg_events_is_the_agents_and_updates_the_identity(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    send(client, tok, payload(events(0, 2), state(), host=host_info(boot_id="boot-1")))
    mixed = [*imported(10, 2, host_info()).events, *events(20, 2)]
    send(client, tok, payload(mixed, host=host_info(boot_id="boot-2", kernel="6.9.0")))
    assert identity(engine) == ("boot-2", "6.9.0", "0.1.0")


# ----------------------------------------------------------------------------- tokens


def test_request_without_a_token_gets_401_asking_for_bearer(client: httpx.Client) -> None:
    r = client.post(URL, content=payload().to_json())
    assert_error(r, 401, "missing_token")
    assert r.headers["www-authenticate"] == "Bearer"


def test_unknown_token_gets_401(client: httpx.Client) -> None:
    assert_error(send(client, "sw_not-a-real-token", payload()), 401, "invalid_token")


def test_revoked_token_gets_401(client: httpx.Client, tokens: Tokens, engine: Engine) -> None:
    tok = tokens.agent()
    with engine.begin() as conn:
        conn.execute(token.update().values(revoked_at=T0))
    assert_error(send(client, tok, payload()), 401, "invalid_token")


def test_agent_token_of_another_host_gets_403_and_stores_nothing(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    r = send(client, tokens.agent("host-2"), payload(events(0, 3)))
    body = assert_error(r, 403, "wrong_host")
    assert "host-2" in body["message"] and "host-1" in body["message"]
    assert scalar(engine, select(func.count()).select_from(event)) == 0


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_viewer_or_admin_token_cannot_ingest(client: httpx.Client, tokens: Tokens, role: str) -> None:
    assert_error(send(client, tokens.create(role), payload()), 403, "wrong_role")


def test_agent_token_cannot_read_the_api(client: httpx.Client, tokens: Tokens) -> None:
    assert_error(client.get("/api/v1/hosts", headers=auth(tokens.agent())), 403, "wrong_role")


def test_token_use_is_recorded_without_a_write_per_request(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    tok = tokens.agent()
    send(client, tok, payload())
    first = None
    for _ in range(50):  # the writer records it asynchronously
        first = scalar(engine, select(token.c.last_used_at))
        if first is not None:
            break
        threading.Event().wait(0.05)
    assert first is not None
    send(client, tok, payload())
    send(client, tok, payload())
    assert scalar(engine, select(token.c.last_used_at)) == first  # once a minute at most


# ----------------------------------------------------------------------------- bad bodies


@pytest.fixture
def small_server(settings: Settings) -> Any:
    srv = Server(settings.model_copy(update={"max_body_bytes": 64 * 1024}))
    srv.start()
    yield srv
    srv.stop()


def test_body_over_the_limit_gets_413(small_server: Server, tokens: Tokens) -> None:
    with httpx.Client(base_url=small_server.url) as c:
        r = send(c, tokens.agent(), payload(events(0, 1000)))
    body = assert_error(r, 413, "payload_too_large")
    assert "65536" in body["message"]


def test_gzip_bomb_gets_413_without_being_expanded(small_server: Server, tokens: Tokens) -> None:
    bomb = gzip.compress(b'{"schema": 1, "host": "' + b"A" * (50 * 1024 * 1024) + b'"}')
    assert len(bomb) < 64 * 1024
    with httpx.Client(base_url=small_server.url) as c:
        r = send(c, tokens.agent(), bomb, **{"Content-Encoding": "gzip"})
    body = assert_error(r, 413, "payload_too_large")
    assert "after gzip decompression" in body["message"]


def test_gzip_compressed_batch_is_accepted(client: httpx.Client, tokens: Tokens) -> None:
    body = gzip.compress(payload(events(0, 5)).to_json().encode())
    r = send(client, tokens.agent(), body, **{"Content-Encoding": "gzip"})
    assert r.json() == {"accepted": 5, "duplicates": 0}


def test_body_that_is_not_gzip_despite_the_header_gets_422(client: httpx.Client, tokens: Tokens) -> None:
    r = send(client, tokens.agent(), payload().to_json().encode(), **{"Content-Encoding": "gzip"})
    assert_error(r, 422, "invalid_gzip")


def test_second_gzip_member_gets_422_instead_of_being_ignored(client: httpx.Client, tokens: Tokens) -> None:
    # issue 14: the events of a second member were silently dropped while the answer said 200
    body = gzip.compress(payload(events(0, 5)).to_json().encode()) + gzip.compress(b"more")
    r = send(client, tokens.agent(), body, **{"Content-Encoding": "gzip"})
    assert "gzip" in assert_error(r, 422, "invalid_gzip")["message"]


def test_unsupported_content_encoding_gets_415(client: httpx.Client, tokens: Tokens) -> None:
    assert_error(
        send(client, tokens.agent(), b"x", **{"Content-Encoding": "br"}), 415, "unsupported_encoding"
    )


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.update(schema=2), "body.schema"),
        (lambda b: b["events"][0].update(seq=-1), "body.events[0].seq"),
        (lambda b: b["events"][0].update(action="explode"), "body.events[0].action"),
        (lambda b: b["events"][0].update(time="2026-11-25 10:00"), "body.events[0].time"),
        (lambda b: b["host"].pop("boot_id"), "body.host.boot_id"),
        (lambda b: b.update(unexpected=True), "body.unexpected"),
    ],
)
def test_invalid_body_gets_422_naming_the_field(
    client: httpx.Client, tokens: Tokens, mutate: Any, field: str
) -> None:
    body = json.loads(payload(events(0, 2)).to_json())
    mutate(body)
    r = send(client, tokens.agent(), json.dumps(body).encode())
    err = assert_error(r, 422, "invalid_payload")
    assert field in err["message"]
    assert [d["field"] for d in err["details"]] == [field]


def test_non_json_body_gets_422_saying_it_is_not_json(client: httpx.Client, tokens: Tokens) -> None:
    err = assert_error(send(client, tokens.agent(), b"<html>"), 422, "invalid_payload")
    assert "JSON" in err["message"]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _mutated() -> st.SearchStrategy[bytes]:
    """The agent's payload with one value somewhere replaced by junk."""
    base = json.loads(payload(events(0, 2), state()).to_json())
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))

    walk(base, ())

    def apply(path: tuple[Any, ...], junk: Any) -> bytes:
        body = json.loads(json.dumps(base))
        if not path:
            return json.dumps(junk).encode()
        node = body
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = junk
        return json.dumps(body).encode()

    return st.builds(apply, st.sampled_from(paths), _json)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(_mutated(), _json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
def test_junk_bodies_never_get_a_500(client: httpx.Client, tokens: Tokens, body: bytes) -> None:
    tok = getattr(test_junk_bodies_never_get_a_500, "_token", None)
    if tok is None or tok[0] != client.base_url:
        tok = (client.base_url, tokens.agent())
        test_junk_bodies_never_get_a_500._token = tok  # type: ignore[attr-defined]
    r = send(client, tok[1], body)
    assert r.status_code in (200, 403, 422), r.text
    if r.status_code != 200:
        assert_error(r, r.status_code)


# ----------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_eight_agents_sending_at_once_on_sqlite_all_get_stored(
    server: Server, tokens: Tokens, engine: Engine
) -> None:
    hosts = [f"host-{i}" for i in range(8)]
    toks = {h: tokens.agent(h) for h in hosts}
    failures: list[str] = []

    def agent(h: str) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for b in range(5):
                r = send(
                    c,
                    toks[h],
                    payload(events(b * 200, 200), state(T0 + timedelta(seconds=b)), host=host_info(h)),
                )
                if r.status_code != 200 or r.json()["accepted"] != 200:
                    failures.append(f"{h}: {r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=agent, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert scalar(engine, select(func.count()).select_from(event)) == 8 * 5 * 200
    assert scalar(engine, select(func.sum(rollup_1m.c.count))) == 8 * 5 * 200


# ----------------------------------------------------------------------------- issue 14 edges


def test_event_in_the_last_microsecond_of_year_9999_is_stored_exactly_once(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    # Its float timestamp rounds up into year 10000: this was a 500, retried by the agent forever.
    at = T0.replace(year=9999, month=12, day=31, hour=23, minute=59, second=59, microsecond=999999)
    tok = tokens.agent()
    assert send(client, tok, payload([ev(1, at)])).json() == {"accepted": 1, "duplicates": 0}
    assert send(client, tok, payload([ev(1, at)])).json() == {"accepted": 0, "duplicates": 1}
    assert scalar(engine, select(event.c.time)).replace(tzinfo=at.tzinfo) == at
    assert scalar(engine, select(func.max(rollup_1m.c.bucket))).replace(tzinfo=at.tzinfo) == at.replace(
        second=0, microsecond=0
    )


def test_nan_and_infinity_in_health_are_stored_as_null_not_a_500(
    client: httpx.Client, tokens: Tokens, viewer_client: httpx.Client
) -> None:
    # PostgreSQL's json type refuses NaN; the agent's figures are free-form, the batch is kept.
    text = payload(events(0, 2), state()).to_json()
    assert text.endswith("}")
    body = text[:-1] + ',"health":{"rate":NaN,"peak":Infinity,"low":-Infinity,"ok":2}}'
    assert "NaN" in body
    r = send(client, tokens.agent(), body.encode())
    assert r.json() == {"accepted": 2, "duplicates": 0}, r.text
    health = viewer_client.get("/api/v1/hosts/host-1").json()["health"]
    assert health == {"rate": None, "peak": None, "low": None, "ok": 2}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.update(schema=True), "body.schema"),
        (lambda b: b["events"][0].update(time="1764064800"), "body.events[0].time"),
    ],
)
def test_values_that_only_look_right_get_422(
    client: httpx.Client, tokens: Tokens, mutate: Any, field: str
) -> None:
    body = json.loads(payload(events(0, 1)).to_json())
    mutate(body)
    r = send(client, tokens.agent(), json.dumps(body).encode())
    assert field in [d["field"] for d in assert_error(r, 422, "invalid_payload")["details"]]


def test_client_hanging_up_mid_body_is_counted_as_499_not_500_and_logged_without_traceback(
    server: Server, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import socket

    body = payload(events(0, 50)).to_json().encode()
    head = (
        f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tokens.agent()}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head + body[: len(body) // 2])  # half the body, then hang up
        registry = server.app.state.metrics_registry
        for _ in range(200):  # the server notices the hang-up asynchronously
            if registry.get_sample_value("splitwatch_ingest_requests_total", {"status": "499"}):
                break
            threading.Event().wait(0.02)
    assert registry.get_sample_value("splitwatch_ingest_requests_total", {"status": "499"}) == 1
    assert registry.get_sample_value("splitwatch_ingest_requests_total", {"status": "500"}) is None
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert problems == [], [r.getMessage() for r in problems]


def test_a_verdict_detail_that_is_not_finite_is_stored_as_null_not_a_500(
    client: httpx.Client, tokens: Tokens, engine: Engine
) -> None:
    body = payload(st=state(T0, verdict="drift")).to_json().replace('"details":{}', '"details":{"x":NaN}')
    response = client.post(
        "/api/v1/ingest",
        content=body,
        headers={"Authorization": f"Bearer {tokens.agent()}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert scalar(engine, select(host.c.verdict_details)) == {"x": None}


# ----------------------------------------------------------------------------- the shortcut


def _answer(
    client: httpx.Client, body: bytes, headers: dict[str, str]
) -> tuple[int, list[tuple[str, str]], bytes]:
    """What a client gets, header for header (the date aside), the body as sent (gzip undone not)."""
    with client.stream("POST", URL, content=body, headers=headers) as r:
        sent = b"".join(r.iter_raw())
        return r.status_code, [(k, v) for k, v in r.headers.multi_items() if k != "date"], sent


def test_ingest_answers_are_the_same_as_the_fastapi_routes(
    server: Server, client: httpx.Client, tokens: Tokens
) -> None:
    # app/api/ingest.py IngestShortcut serves POST /api/v1/ingest past GZip, the exception
    # middleware and the router; with a dependency override set, FastAPI's own stack serves it.
    from app.deps import get_engine

    agent = tokens.agent()
    big_invalid = payload(events(0, 300)).to_json().replace('"kmsg"', '"klog"')
    cases: list[tuple[str, dict[str, str], bytes]] = [
        ("", {}, payload().to_json().encode()),
        ("sw_not-a-real-token", {}, payload().to_json().encode()),
        (tokens.create("viewer"), {}, payload().to_json().encode()),
        (tokens.agent("host-2"), {}, payload().to_json().encode()),
        (agent, {"Accept-Encoding": "gzip"}, big_invalid.encode()),  # a 422 over GZip's minimum
        (agent, {"Accept-Encoding": "identity"}, big_invalid.encode()),
        (agent, {}, b"{not json"),
        (agent, {"Content-Encoding": "br"}, payload().to_json().encode()),
        # The Authorization header as FastAPI's HTTPBearer reads it (the shortcut reads it itself):
        # the scheme in any case, the spaces before the token dropped, any other scheme none.
        ("", {"Authorization": f"bearer {agent}"}, b"{not json"),
        ("", {"Authorization": f"BEARER   {agent}"}, b"{not json"),
        ("", {"Authorization": f"Basic {agent}"}, b"{not json"),
        ("", {"Authorization": "Bearer"}, b"{not json"),
        ("", {"Authorization": f"Bearer{agent}"}, b"{not json"),
        (agent, {"Content-Encoding": "X-GZIP"}, gzip.compress(b"{not json")),
        (agent, {"Accept-Encoding": "gzip"}, payload(events(0, 5)).to_json().encode()),  # stored
    ]
    answers = []
    try:
        for overridden in (False, True):
            if overridden:
                server.app.dependency_overrides[get_engine] = lambda: server.app.state.engine
            answers.append(
                [
                    _answer(
                        client,
                        body,
                        {"Content-Type": "application/json", "Accept-Encoding": "", **headers, **auth(tok)}
                        if tok
                        else {"Content-Type": "application/json", "Accept-Encoding": "", **headers},
                    )
                    for tok, headers, body in cases
                ]
            )
    finally:
        server.app.dependency_overrides.clear()
    shortcut, route = answers
    # The stored batch: accepted the first time, all duplicates the second.
    assert shortcut[-1][2] == b'{"accepted":5,"duplicates":0}'
    assert route[-1][2] == b'{"accepted":0,"duplicates":5}'
    assert shortcut[-1][:2] == route[-1][:2]
    assert shortcut[:-1] == route[:-1]
    assert dict(shortcut[4][1])["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(shortcut[4][2]))["error"] == "invalid_payload"
    statuses = [a[0] for a in shortcut]
    assert statuses == [401, 401, 403, 403, 422, 422, 422, 415, 422, 422, 401, 401, 401, 422, 200]


def test_a_stored_batchs_answer_is_the_json_response_it_was() -> None:
    # StoredAnswer skips Response's header machinery; what it sends must not change.
    from starlette.responses import Response

    from app.api.ingest import StoredAnswer

    for accepted, duplicates in ((0, 0), (5, 0), (0, 12), (1000, 3)):
        body = f'{{"accepted":{accepted},"duplicates":{duplicates}}}'.encode()
        made = StoredAnswer(accepted, duplicates)
        expected = Response(body, media_type="application/json")
        assert (made.status_code, made.raw_headers, made.body) == (
            expected.status_code,
            expected.raw_headers,
            expected.body,
        )
        assert made.headers == expected.headers and made.background is None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_full_disk_answers_503_stores_nothing_and_the_resend_is_stored_once_there_is_room(
    server: Server, tokens: Tokens, engine: Engine
) -> None:
    # The event insert runs on the DB-API cursor: its SQLITE_FULL must be answered as the
    # database error it is ("send it again later"), not as a bug.
    import asyncio

    writer = server.app.state.writer

    def cap_at(pages: int | None) -> Any:
        def job(conn: Any) -> None:
            size = pages if pages is not None else conn.exec_driver_sql("PRAGMA page_count").scalar()
            conn.exec_driver_sql(f"PRAGMA max_page_count = {int(size)}")

        return job

    tok = tokens.agent()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert send(client, tok, payload(events(0, 5))).status_code == 200
        asyncio.run(writer.run(cap_at(None)))  # the disk is full from here on
        big = payload(events(5, 3000))
        body = assert_error(send(client, tok, big), 503, "database_busy")
        assert "full" in body["message"] and "send it again later" in body["message"]
        assert scalar(engine, select(func.count()).select_from(event)) == 5  # nothing half-stored
        asyncio.run(writer.run(cap_at(2**31)))  # room again
        r = send(client, tok, big)
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 3000, "duplicates": 0}
    assert scalar(engine, select(func.count()).select_from(event)) == 3005
