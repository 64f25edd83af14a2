"""`splitwatch db upgrade`: bring the database to the migration head the code needs."""

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


def register(cli: typer.Typer) -> None:
    db = typer.Typer(help="Database schema (migrations).", no_args_is_help=True)

    @db.command("upgrade")
    def upgrade(database_url: DatabaseUrl = None) -> None:
        """Migrate the database to the newest schema (creates it when empty)."""
        from sqlalchemy.exc import SQLAlchemyError

        from app.settings import Settings
        from app.store.engine import DatabaseUrlError, make_engine
        from app.store.schema_check import head_revision, migrate, safe_url

        url = database_url or Settings().database_url
        try:
            engine = make_engine(url)
        except DatabaseUrlError as exc:
            typer.echo(f"splitwatch db upgrade: {exc}", err=True)
            raise typer.Exit(2) from None
        try:
            migrate(engine)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            typer.echo(
                f"splitwatch db upgrade: database {safe_url(engine)} failed ({reason}): "
                "check the URL, that the server runs and that the user may create tables",
                err=True,
            )
            raise typer.Exit(1) from None
        finally:
            engine.dispose()
        typer.echo(f"database {safe_url(engine)} is at {head_revision()}")

    cli.add_typer(db, name="db")
