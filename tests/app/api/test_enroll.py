"""POST /api/v1/enroll (#15): one enrollment token, many hosts, each with its own agent token;
every refusal says why."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, update

from app.store.tables import token
from tests.app.conftest import Server, Tokens, assert_error, auth
from tests.app.fill import T0, Filler, ev

MACHINE_A = "0123456789abcdef0123456789abcdef"
MACHINE_B = "fedcba9876543210fedcba9876543210"


@pytest.fixture
def admin(server: Server, tokens: Tokens) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=30, headers=auth(tokens.admin())) as c:
        yield c


def make_enroll_token(admin: httpx.Client, **fields: Any) -> dict[str, Any]:
    answer = admin.post("/api/v1/tokens", json={"role": "enroll", **fields})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def enroll(client: httpx.Client, raw: str, host: str, machine_id: str | None = MACHINE_A) -> httpx.Response:
    body = {"host": host, "boot_id": "b0a7c0de-0000-4000-8000-000000000001", "machine_id": machine_id}
    return client.post("/api/v1/enroll", json=body, headers=auth(raw))


class Fixed:
    """A TokenMaker for Filler that hands out the enrolled tokens."""

    def __init__(self, by_host: dict[str, str]) -> None:
        self.by_host = by_host

    def agent(self, host: str = "") -> str:
        return self.by_host[host]


def test_enrolled_host_gets_its_own_agent_token_which_writes_only_that_host(
    admin: httpx.Client, client: httpx.Client
) -> None:
    fleet = make_enroll_token(admin, host_glob="kvm-*", max_uses=10, expires_in="7d")
    assert fleet["expires_at"] is not None and fleet["max_uses"] == 10 and fleet["uses"] == 0
    answer = enroll(client, fleet["token"], "kvm-1")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["role"], body["host"], body["machine_id"], body["enrolled_by"]) == (
        "agent", "kvm-1", MACHINE_A, fleet["id"],
    )  # fmt: skip
    fill = Filler(str(client.base_url), Fixed({"kvm-1": body["token"], "kvm-2": body["token"]}))
    try:
        assert fill.post(fill.payload("kvm-1", events=[ev(T0)])).status_code == 200
        assert_error(fill.post(fill.payload("kvm-2", events=[ev(T0)])), 403, "wrong_host")
    finally:
        fill.close()
    listed = admin.get("/api/v1/tokens", params={"role": "enroll"}).json()["items"]
    assert listed[0]["uses"] == 1 and listed[0]["last_used_at"] is not None


def test_enrollment_token_itself_can_read_and_write_nothing(
    admin: httpx.Client, client: httpx.Client
) -> None:
    raw = make_enroll_token(admin)["token"]
    assert_error(client.get("/api/v1/hosts", headers=auth(raw)), 403, "wrong_role")
    assert_error(client.get("/api/v1/whoami", headers=auth(raw)), 403, "wrong_role")
    fill = Filler(str(client.base_url), Fixed({"kvm-1": raw}))
    try:
        assert_error(fill.post(fill.payload("kvm-1", events=[ev(T0)])), 403, "wrong_role")
    finally:
        fill.close()
    assert_error(client.post("/api/v1/tokens", json={"role": "admin"}, headers=auth(raw)), 403)


def test_expired_enrollment_token_is_refused_saying_when_it_expired(
    admin: httpx.Client, client: httpx.Client, engine: Engine
) -> None:
    fleet = make_enroll_token(admin)
    with engine.begin() as conn:
        conn.execute(
            update(token)
            .where(token.c.id == fleet["id"])
            .values(expires_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
        )
    error = assert_error(enroll(client, fleet["token"], "kvm-1"), 401, "enroll_token_expired")
    assert "expired at 2026-01-02T03:04:05Z" in error["message"]


def test_exhausted_enrollment_token_is_refused_saying_how_often_it_was_used(
    admin: httpx.Client, client: httpx.Client
) -> None:
    raw = make_enroll_token(admin, max_uses=2)["token"]
    assert enroll(client, raw, "kvm-1").status_code == 201
    assert enroll(client, raw, "kvm-2", MACHINE_B).status_code == 201
    error = assert_error(enroll(client, raw, "kvm-3", None), 403, "enroll_token_exhausted")
    assert "used 2 of 2 times" in error["message"]


def test_revoked_enrollment_token_is_refused_saying_it_was_revoked(
    admin: httpx.Client, client: httpx.Client
) -> None:
    fleet = make_enroll_token(admin)
    assert admin.delete(f"/api/v1/tokens/{fleet['id']}").status_code == 204
    error = assert_error(enroll(client, fleet["token"], "kvm-1"), 401, "enroll_token_revoked")
    assert "was revoked" in error["message"]


def test_host_name_outside_the_pattern_is_refused_naming_the_pattern(
    admin: httpx.Client, client: httpx.Client
) -> None:
    raw = make_enroll_token(admin, host_glob="kvm-*")["token"]
    error = assert_error(enroll(client, raw, "db-1"), 403, "host_not_allowed")
    assert "'kvm-*'" in error["message"]
    assert admin.get("/api/v1/tokens", params={"role": "enroll"}).json()["items"][0]["uses"] == 0


def test_unknown_missing_or_non_enrollment_tokens_are_refused(client: httpx.Client, tokens: Tokens) -> None:
    assert_error(enroll(client, "sw_nope", "kvm-1"), 401, "invalid_token")
    assert_error(client.post("/api/v1/enroll", json={"host": "kvm-1", "boot_id": "b"}), 401, "missing_token")
    assert_error(enroll(client, tokens.admin(), "kvm-1"), 403, "wrong_role")


def test_second_machine_claiming_an_enrolled_name_gets_409_with_the_admins_remedy(
    admin: httpx.Client, client: httpx.Client
) -> None:
    raw = make_enroll_token(admin)["token"]
    first = enroll(client, raw, "kvm-1", MACHINE_A).json()
    error = assert_error(enroll(client, raw, "kvm-1", MACHINE_B), 409, "host_already_enrolled")
    assert "splitwatch token revoke --host kvm-1" in error["message"]
    assert "splitwatch token rekey kvm-1" in error["message"]
    assert_error(enroll(client, raw, "kvm-1", None), 409, "host_already_enrolled")
    # The refused attempts used nothing, and the first machine's token still works.
    assert admin.get("/api/v1/tokens", params={"role": "enroll"}).json()["items"][0]["uses"] == 1
    assert client.get("/api/v1/whoami", headers=auth(first["token"])).status_code == 200
    # Once an admin frees the name, the new machine enrolls.
    assert admin.delete("/api/v1/hosts/kvm-1/token").status_code == 200
    assert enroll(client, raw, "kvm-1", MACHINE_B).status_code == 201


def test_same_machine_reenrolling_after_a_reinstall_gets_a_fresh_token_and_the_old_one_dies(
    admin: httpx.Client, client: httpx.Client
) -> None:
    raw = make_enroll_token(admin)["token"]
    old = enroll(client, raw, "kvm-1", MACHINE_A).json()
    new = enroll(client, raw, "kvm-1", MACHINE_A)
    assert new.status_code == 201
    assert new.json()["replaced"] == [old["id"]] and new.json()["token"] != old["token"]
    assert_error(client.get("/api/v1/whoami", headers=auth(old["token"])), 401)
    assert client.get("/api/v1/whoami", headers=auth(new.json()["token"])).json()["host"] == "kvm-1"


def test_a_hand_made_agent_token_blocks_enrollment_of_its_name(
    admin: httpx.Client, client: httpx.Client, tokens: Tokens
) -> None:
    tokens.agent("kvm-1")
    raw = make_enroll_token(admin)["token"]
    assert_error(enroll(client, raw, "kvm-1", MACHINE_A), 409, "host_already_enrolled")


@pytest.mark.parametrize(
    "body",
    [
        {"host": "", "boot_id": "b"},
        {"host": "kvm\n1", "boot_id": "b"},
        {"host": "kvm-1", "boot_id": "b", "machine_id": "not-hex"},
        {"host": "kvm-1"},
        {"host": "kvm-1", "boot_id": "b", "role": "admin"},
    ],
)
def test_bad_enrollment_bodies_are_422(
    admin: httpx.Client, client: httpx.Client, body: dict[str, Any]
) -> None:
    raw = make_enroll_token(admin)["token"]
    assert_error(client.post("/api/v1/enroll", json=body, headers=auth(raw)), 422)


def test_concurrent_enrollments_never_exceed_max_uses(
    admin: httpx.Client, server: Server, engine: Engine
) -> None:
    fleet = make_enroll_token(admin, max_uses=5)

    def one(i: int) -> int:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            return enroll(c, fleet["token"], f"kvm-{i}", f"{i:032x}").status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(24)))
    assert sorted(codes) == [201] * 5 + [403] * 19
    with engine.connect() as conn:
        uses = conn.execute(select(token.c.uses).where(token.c.id == fleet["id"])).scalar_one()
        agents = conn.execute(select(token.c.id).where(token.c.enrolled_by == fleet["id"])).all()
    assert uses == 5 and len(agents) == 5


def test_two_machines_racing_for_one_name_get_one_token(admin: httpx.Client, server: Server) -> None:
    raw = make_enroll_token(admin)["token"]

    def one(i: int) -> int:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            return enroll(c, raw, "kvm-contested", f"{i:032x}").status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(16)))
    assert sorted(codes) == [201] + [409] * 15
