"""`splitwatch token create|list|revoke`: API tokens (shown once, stored hashed)."""

from __future__ import annotations

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


def register(cli: typer.Typer) -> None:
    tok = typer.Typer(help="API tokens for agents, viewers and admins.", no_args_is_help=True)

    @tok.command("create")
    def create(
        role: Annotated[str, typer.Option("--role", help="agent | viewer | admin")],
        host: Annotated[
            str | None, typer.Option("--host", help="The one host an agent token may write.")
        ] = None,
        label: Annotated[str | None, typer.Option("--label", help="A note: who or what uses it.")] = None,
        database_url: DatabaseUrl = None,
    ) -> None:
        """Create a token and print it alone on the last line (it is shown only this once)."""
        from sqlalchemy import Engine

        from app.store.tokens import TokenError, check_request, create_token

        try:
            check_request(role, host)
        except TokenError as exc:
            typer.echo(f"splitwatch token create: {exc}", err=True)
            raise typer.Exit(2) from None
        engine = _engine(database_url, "create")
        assert isinstance(engine, Engine)
        try:
            with engine.begin() as conn:
                raw, token_id = create_token(conn, role, host, label)
        finally:
            engine.dispose()
        scope = f" for host {host}" if host else ""
        typer.echo(f"created {role} token #{token_id}{scope}; it is shown only now, store it safely:")
        typer.echo(raw)

    @tok.command("list")
    def list_(database_url: DatabaseUrl = None) -> None:
        """List tokens (never the tokens themselves: only their ids, roles and use)."""
        from sqlalchemy import Engine

        from app.store.tokens import list_tokens

        engine = _engine(database_url, "list")
        assert isinstance(engine, Engine)
        try:
            with engine.connect() as conn:
                rows = list_tokens(conn)
        finally:
            engine.dispose()
        for t in rows:
            state = f"revoked {t.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if t.revoked_at else "live"
            used = f"{t.last_used_at:%Y-%m-%dT%H:%M:%SZ}" if t.last_used_at else "never"
            typer.echo(f"#{t.id}\t{t.role}\t{t.host_name or '-'}\t{t.label or '-'}\tused {used}\t{state}")

    @tok.command("revoke")
    def revoke(
        token_id: Annotated[int, typer.Argument(help="The token's id (#N in `token list`).")],
        database_url: DatabaseUrl = None,
    ) -> None:
        """Revoke a token: it stops working at once."""
        from sqlalchemy import Engine

        from app.store.tokens import revoke_token

        engine = _engine(database_url, "revoke")
        assert isinstance(engine, Engine)
        try:
            with engine.begin() as conn:
                done = revoke_token(conn, token_id)
        finally:
            engine.dispose()
        if not done:
            typer.echo(
                f"splitwatch token revoke: no live token #{token_id}: see `splitwatch token list`", err=True
            )
            raise typer.Exit(1)
        typer.echo(f"revoked token #{token_id}")

    cli.add_typer(tok, name="token")
