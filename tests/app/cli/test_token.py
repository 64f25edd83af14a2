"""`splitwatch token create|list|revoke`: the token alone on the last line, stored hashed."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sqlalchemy import select

from app.store.engine import make_engine
from app.store.tables import token
from app.store.tokens import find_token, hash_token
from tests.app.cli.test_serve import run

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_agent_token_is_printed_alone_on_the_last_line_and_stored_only_as_its_hash(
    migrated_db_url: str,
) -> None:
    result = run("token", "create", "--role", "agent", "--host", "kvm-17", "--database-url", migrated_db_url)
    assert result.returncode == 0, result.stderr
    raw = result.stdout.splitlines()[-1]
    assert raw.startswith("sw_") and " " not in raw and len(raw) > 40
    engine = make_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(token.c.hash, token.c.role, token.c.host_name)).one()
            found = find_token(conn, raw)
    finally:
        engine.dispose()
    assert tuple(stored) == (hash_token(raw), "agent", "kvm-17")
    assert raw not in stored.hash
    assert found is not None and found.host_name == "kvm-17"


def test_agent_token_without_host_is_refused_with_the_flag_to_add(migrated_db_url: str) -> None:
    result = run("token", "create", "--role", "agent", "--database-url", migrated_db_url)
    assert result.returncode == 2
    assert "--host NAME" in result.stderr


def test_unknown_role_is_refused_naming_the_roles(migrated_db_url: str) -> None:
    result = run("token", "create", "--role", "root", "--database-url", migrated_db_url)
    assert result.returncode == 2
    assert "agent, viewer, admin" in result.stderr


def test_viewer_token_with_a_host_is_refused(migrated_db_url: str) -> None:
    result = run("token", "create", "--role", "viewer", "--host", "x", "--database-url", migrated_db_url)
    assert result.returncode == 2
    assert "agent tokens only" in result.stderr


def test_token_create_on_an_unmigrated_database_says_to_upgrade(db_url: str) -> None:
    result = run("token", "create", "--role", "viewer", "--database-url", db_url)
    assert result.returncode == 1
    assert "splitwatch db upgrade" in result.stderr


def test_revoked_token_no_longer_verifies_and_is_listed_as_revoked(migrated_db_url: str) -> None:
    raw = run("token", "create", "--role", "viewer", "--label", "grafana", "--database-url", migrated_db_url)
    token_line = raw.stdout.splitlines()[-1]
    listed = run("token", "list", "--database-url", migrated_db_url)
    assert "#1\tviewer\t-\tgrafana\tused never\tlive" in listed.stdout
    assert token_line not in listed.stdout
    assert run("token", "revoke", "1", "--database-url", migrated_db_url).returncode == 0
    assert "revoked" in run("token", "list", "--database-url", migrated_db_url).stdout
    engine = make_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            assert find_token(conn, token_line) is None
    finally:
        engine.dispose()
    again = run("token", "revoke", "1", "--database-url", migrated_db_url)
    assert again.returncode == 1 and "token list" in again.stderr


def _tokens(url: str) -> list[tuple[str, str | None, str | None, int | None, str | None]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(token.c.hash, token.c.role, token.c.host_name, token.c.max_uses, token.c.host_glob)
            ).all()
    finally:
        engine.dispose()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_hosts_file_makes_one_agent_token_per_host_as_csv_in_one_run(
    migrated_db_url: str, tmp_path: Path
) -> None:
    names = [f"kvm-{i:04d}" for i in range(300)]
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# rack 4\n" + "\n".join(names[:150]) + "\n\n" + "\n".join(names[150:]) + "\n")
    result = run("token", "create", "--hosts-file", str(hosts), "--database-url", migrated_db_url)
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["host", "token"]
    assert [r[0] for r in rows[1:]] == names
    assert len({r[1] for r in rows[1:]}) == 300
    stored = {h: (role, host) for h, role, host, _m, _g in _tokens(migrated_db_url)}
    for name, raw in rows[1:]:
        assert stored[hash_token(raw)] == ("agent", name)
    assert "300 agent token(s)" in result.stderr


def test_hosts_file_with_a_duplicate_or_a_bad_name_is_refused_naming_the_line_and_makes_nothing(
    migrated_db_url: str, tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("kvm-1\nkvm-2\nkvm-1\n")
    result = run("token", "create", "--hosts-file", str(hosts), "--database-url", migrated_db_url)
    assert result.returncode == 2 and "line 3" in result.stderr and "line 1" in result.stderr
    hosts.write_text("kvm-1\nkvm\x07bell\n")
    result = run("token", "create", "--hosts-file", str(hosts), "--database-url", migrated_db_url)
    assert result.returncode == 2 and "line 2" in result.stderr
    assert _tokens(migrated_db_url) == []
    nope = str(tmp_path / "nope")
    missing = run("token", "create", "--hosts-file", nope, "--database-url", migrated_db_url)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_enrollment_token_with_glob_expiry_and_max_uses_is_listed_with_its_use_count(
    migrated_db_url: str,
) -> None:
    result = run(
        "token", "create", "--role", "enroll", "--host-glob", "kvm-*", "--expires", "7d",
        "--max-uses", "500", "--database-url", migrated_db_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    raw = result.stdout.splitlines()[-1]
    assert "'kvm-*'" in result.stdout and "at most 500" in result.stdout
    [(stored, role, _host, max_uses, glob)] = _tokens(migrated_db_url)
    assert (stored, role, max_uses, glob) == (hash_token(raw), "enroll", 500, "kvm-*")
    listed = run("token", "list", "--role", "enroll", "--database-url", migrated_db_url).stdout
    assert "uses 0/500\tglob kvm-*" in listed and raw not in listed


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--role", "viewer", "--max-uses", "3"], "enrollment tokens only"),
        (["--role", "enroll", "--expires", "tomorrow"], "not a duration"),
        (["--role", "enroll", "--max-uses", "0"], "positive"),
        ([], "--role"),
    ],
)
def test_enrollment_options_that_make_no_sense_are_refused(
    migrated_db_url: str, args: list[str], says: str
) -> None:
    result = run("token", "create", *args, "--database-url", migrated_db_url)
    assert result.returncode == 2 and says in result.stderr, result.stderr


def test_rekey_replaces_a_hosts_token_and_revoke_by_host_ends_it(migrated_db_url: str) -> None:
    old = run("token", "create", "--role", "agent", "--host", "kvm-5", "--database-url", migrated_db_url)
    old_raw = old.stdout.splitlines()[-1]
    rekeyed = run("token", "rekey", "kvm-5", "--database-url", migrated_db_url)
    assert rekeyed.returncode == 0, rekeyed.stderr
    new_raw = rekeyed.stdout.splitlines()[-1]
    assert "revoked: #1" in rekeyed.stdout and new_raw.startswith("sw_")
    engine = make_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            assert find_token(conn, old_raw) is None
            found = find_token(conn, new_raw)
            assert found is not None and found.host_name == "kvm-5"
    finally:
        engine.dispose()
    revoked = run("token", "revoke", "--host", "kvm-5", "--database-url", migrated_db_url)
    assert revoked.returncode == 0 and "#2" in revoked.stdout
    again = run("token", "revoke", "--host", "kvm-5", "--database-url", migrated_db_url)
    assert again.returncode == 1 and "no live agent token for host kvm-5" in again.stderr
    typo = run("token", "rekey", "kvm-55", "--database-url", migrated_db_url)
    assert typo.returncode == 1 and "check the name" in typo.stderr
