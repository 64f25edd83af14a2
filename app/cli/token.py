"""`splitwatch token create|list|revoke|rekey`: API and enrollment tokens (shown once, stored hashed).

`create --hosts-file F` makes one agent token per listed host in one process and one
transaction (one executemany) and prints CSV `host,token`: a fleet of 10,000 hosts costs one
command, not 10,000 processes (#15). `create --role enroll` makes the fleet's enrollment token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SPLITWATCH_DATABASE_URL",
        help="SQLAlchemy URL; default sqlite:///./splitwatch.db.",
        show_default=False,
    ),
]


def _engine(database_url: str | None, what: str) -> object:
    from app.settings import Settings
    from app.store.engine import DatabaseUrlError, make_engine
    from app.store.schema_check import schema_status

    try:
        engine = make_engine(database_url or Settings().database_url)
    except DatabaseUrlError as exc:
        typer.echo(f"splitwatch token {what}: {exc}", err=True)
        raise typer.Exit(2) from None
    status = schema_status(engine)
    if not status.ok:
        typer.echo(f"splitwatch token {what}: {status.message}", err=True)
        raise typer.Exit(1)
    return engine


def _fail(what: str, message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"splitwatch token {what}: {message}", err=True)
    return typer.Exit(code)


def _stamp(at: object) -> str:
    return f"{at:%Y-%m-%dT%H:%M:%SZ}" if at is not None else "never"


def _create_many(
    hosts_file: Path, role: str | None, host: str | None, label: str | None, url: str | None
) -> None:
    import csv
    import sys

    from sqlalchemy import Engine

    from app.store.tokens import TokenError, create_agent_tokens, read_hosts_file

    if role not in (None, "agent") or host is not None:
        raise _fail(
            "create", "--hosts-file makes agent tokens, one per listed host: leave out --role and --host"
        )
    try:
        with hosts_file.open(encoding="utf-8") if str(hosts_file) != "-" else sys.stdin as f:
            names = read_hosts_file(f)
    except OSError as exc:
        raise _fail(
            "create", f"cannot read {hosts_file} ({exc.strerror}): pass a file of host names"
        ) from None
    except UnicodeDecodeError:
        raise _fail("create", f"{hosts_file} is not UTF-8 text: one host name a line") from None
    except TokenError as exc:
        raise _fail("create", f"{hosts_file} {exc}") from None
    if not names:
        raise _fail("create", f"{hosts_file} lists no host: one host name a line")
    engine = _engine(url, "create")
    assert isinstance(engine, Engine)
    try:
        with engine.begin() as conn:
            pairs = create_agent_tokens(conn, names, label)
    finally:
        engine.dispose()
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(("host", "token"))
    out.writerows(pairs)
    sys.stdout.flush()
    typer.echo(
        f"created {len(pairs)} agent token(s), one per host; they are shown only now, store them safely",
        err=True,
    )


def register(cli: typer.Typer) -> None:
    tok = typer.Typer(
        help="API tokens for agents, viewers and admins; enrollment tokens.", no_args_is_help=True
    )

    @tok.command("create")
    def create(
        role: Annotated[
            str | None, typer.Option("--role", help="agent | viewer | admin | enroll", show_default=False)
        ] = None,
        host: Annotated[
            str | None, typer.Option("--host", help="The one host an agent token may write.")
        ] = None,
        label: Annotated[str | None, typer.Option("--label", help="A note: who or what uses it.")] = None,
        hosts_file: Annotated[
            Path | None,
            typer.Option(
                "--hosts-file",
                help="One agent token per host named in this file (one a line; - reads stdin); "
                "prints CSV host,token.",
            ),
        ] = None,
        host_glob: Annotated[
            str | None,
            typer.Option("--host-glob", help="Enrollment tokens: host names that may enroll, e.g. 'kvm-*'."),
        ] = None,
        expires: Annotated[
            str | None,
            typer.Option(
                "--expires",
                help="Lifetime (90s, 30m, 12h, 7d, 2w). Enrollment tokens default to 24h; "
                "others never expire.",
            ),
        ] = None,
        max_uses: Annotated[
            int | None,
            typer.Option("--max-uses", help="Enrollment tokens: how many hosts may enroll with it."),
        ] = None,
        database_url: DatabaseUrl = None,
    ) -> None:
        """Create a token and print it alone on the last line (it is shown only this once)."""
        from datetime import UTC, datetime

        from sqlalchemy import Engine

        from app.store.tokens import TokenError, check_request, create_token, parse_duration

        if hosts_file is not None:
            if host_glob is not None or max_uses is not None or expires is not None:
                raise _fail(
                    "create",
                    "--hosts-file makes plain agent tokens: leave out --host-glob, --max-uses, --expires",
                )
            _create_many(hosts_file, role, host, label, database_url)
            return
        if role is None:
            raise _fail("create", "pick a role with --role agent|viewer|admin|enroll (or pass --hosts-file)")
        now = datetime.now(UTC)
        try:
            check_request(role, host, host_glob=host_glob, max_uses=max_uses)
            expires_at = now + parse_duration(expires) if expires is not None else None
        except TokenError as exc:
            raise _fail("create", str(exc)) from None
        engine = _engine(database_url, "create")
        assert isinstance(engine, Engine)
        try:
            with engine.begin() as conn:
                raw, token_id = create_token(
                    conn,
                    role,
                    host,
                    label,
                    now,
                    expires_at=expires_at,
                    host_glob=host_glob,
                    max_uses=max_uses,
                )
        finally:
            engine.dispose()
        if role == "enroll":
            from app.store.tokens import default_expiry

            limits = [f"hosts matching {host_glob!r}" if host_glob else "any host name"]
            limits.append(f"at most {max_uses} enrollment(s)" if max_uses else "no limit on uses")
            limits.append(f"expires {_stamp(default_expiry(role, expires_at, now))}")
            typer.echo(f"created enrollment token #{token_id} ({'; '.join(limits)}); it is shown only now:")
        else:
            scope = f" for host {host}" if host else ""
            expiry = f" (expires {_stamp(expires_at)})" if expires_at else ""
            typer.echo(
                f"created {role} token #{token_id}{scope}{expiry}; it is shown only now, store it safely:"
            )
        typer.echo(raw)

    @tok.command("list")
    def list_(
        role: Annotated[str | None, typer.Option("--role", help="Only tokens of this role.")] = None,
        database_url: DatabaseUrl = None,
    ) -> None:
        """List tokens, oldest first (never the tokens themselves: ids, roles, use, enrollment counts)."""
        from datetime import UTC, datetime

        from sqlalchemy import Engine

        from app.store.tokens import list_tokens

        engine = _engine(database_url, "list")
        assert isinstance(engine, Engine)
        now = datetime.now(UTC)
        try:
            with engine.connect() as conn:
                rows = list_tokens(conn, role=role, now=now)
        finally:
            engine.dispose()
        for t in reversed(rows):
            if t.revoked_at:
                state = f"revoked {_stamp(t.revoked_at)}"
            elif t.expires_at and t.expires_at <= now:
                state = f"expired {_stamp(t.expires_at)}"
            else:
                state = "live"
            used = _stamp(t.last_used_at)
            line = f"#{t.id}\t{t.role}\t{t.host_name or '-'}\t{t.label or '-'}\tused {used}\t{state}"
            if t.role == "enroll":
                cap = t.max_uses if t.max_uses is not None else "unlimited"
                line += f"\tuses {t.uses}/{cap}\tglob {t.host_glob or '*'}\texpires {_stamp(t.expires_at)}"
            elif t.role == "agent":
                line += f"\treported {_stamp(t.host_last_seen_at)}"
            typer.echo(line)

    @tok.command("revoke")
    def revoke(
        token_id: Annotated[
            int | None, typer.Argument(help="The token's id (#N in `token list`).", show_default=False)
        ] = None,
        host: Annotated[
            str | None, typer.Option("--host", help="Revoke every live agent token of this host instead.")
        ] = None,
        database_url: DatabaseUrl = None,
    ) -> None:
        """Revoke a token, or a host's agent tokens: servers refuse them within seconds."""
        from sqlalchemy import Engine

        from app.store.tokens import revoke_host_tokens, revoke_token

        if (token_id is None) == (host is None):
            raise _fail("revoke", "name one token id, or --host NAME for a host's agent tokens")
        engine = _engine(database_url, "revoke")
        assert isinstance(engine, Engine)
        try:
            with engine.begin() as conn:
                ids = [token_id] if token_id is not None and revoke_token(conn, token_id) else []
                if host is not None:
                    ids = revoke_host_tokens(conn, host)
        finally:
            engine.dispose()
        if not ids:
            what = f"#{token_id}" if token_id is not None else f"agent token for host {host}"
            raise _fail("revoke", f"no live {what}: see `splitwatch token list`", 1)
        typer.echo(f"revoked token {', '.join(f'#{i}' for i in ids)}")

    @tok.command("rekey")
    def rekey(
        host: Annotated[str, typer.Argument(help="The host whose agent token is replaced.")],
        database_url: DatabaseUrl = None,
    ) -> None:
        """Replace a host's agent token: revoke its live ones, print a new one on the last line."""
        from sqlalchemy import Engine

        from app.store.tokens import host_known, rekey_host

        engine = _engine(database_url, "rekey")
        assert isinstance(engine, Engine)
        try:
            with engine.begin() as conn:
                if not host_known(conn, host):
                    raise _fail(
                        "rekey",
                        f"host {host!r} has neither reported nor had an agent token: check the name, or "
                        f"create its first with `splitwatch token create --role agent --host {host}`",
                        1,
                    )
                done = rekey_host(conn, host)
        finally:
            engine.dispose()
        revoked = ", ".join(f"#{i}" for i in done.revoked) or "none was live"
        typer.echo(
            f"created agent token #{done.token_id} for host {host} (revoked: {revoked}); install it on the "
            "host (--token, or the agent's state directory file agent-token) and restart the agent:"
        )
        typer.echo(done.token)

    cli.add_typer(tok, name="token")
