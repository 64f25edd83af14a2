"""`splitwatch alerts`: the alerts firing now (or pending, or recently resolved), from the database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.token import DatabaseUrl

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from app.settings import Settings


def open_database(database_url: str | None, prog: str) -> tuple[Engine, Settings]:
    """Settings (flags over SPLITWATCH_*) and an engine on a database at the migration head;
    an expected failure ends the command with its sentence."""
    from pydantic import ValidationError

    from app.settings import Settings
    from app.store.engine import DatabaseUrlError, make_engine
    from app.store.schema_check import schema_status

    try:
        settings = Settings(database_url=database_url) if database_url else Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        typer.echo(f"{prog}: invalid setting ({problems}): fix the SPLITWATCH_* variable", err=True)
        raise typer.Exit(2) from None
    try:
        engine = make_engine(settings.database_url)
    except DatabaseUrlError as exc:
        typer.echo(f"{prog}: {exc}", err=True)
        raise typer.Exit(2) from None
    status = schema_status(engine)
    if not status.ok:
        engine.dispose()
        typer.echo(f"{prog}: {status.message}", err=True)
        raise typer.Exit(1)
    return engine, settings


def register(cli: typer.Typer) -> None:
    @cli.command("alerts")
    def alerts(
        status: Annotated[
            str, typer.Option("--status", help="firing | pending | resolved.", show_default=True)
        ] = "firing",
        limit: Annotated[
            int, typer.Option("--limit", min=1, max=1000, help="At most this many, newest first.")
        ] = 100,
        as_json: Annotated[
            bool, typer.Option("--json", help="One JSON object per line instead of a table.")
        ] = False,
        database_url: DatabaseUrl = None,
    ) -> None:
        """List alerts (default: those firing now): since, alertname, severity, host/guest, summary."""
        import datetime as dt
        import json

        from app.store.alerting import list_alerts

        if status not in ("firing", "pending", "resolved"):
            typer.echo(f"splitwatch alerts: --status {status!r}: use firing, pending or resolved", err=True)
            raise typer.Exit(2)
        engine, settings = open_database(database_url, "splitwatch alerts")
        try:
            with engine.connect() as conn:
                page = list_alerts(
                    conn, settings, status=status, rule=None, host=None, guest=None, since=None, limit=limit,
                    now=dt.datetime.now(dt.UTC),
                )  # fmt: skip
        finally:
            engine.dispose()
        items = page.items
        if page.next_before is not None:  # on stderr: --json's lines stay one alert each
            more = "there are more (--limit up to 1000, or GET /api/v1/alerts with its cursor)"
            typer.echo(f"splitwatch alerts: the newest {limit} {status} alerts; {more}", err=True)
        if as_json:
            for item in items:
                typer.echo(json.dumps(item, default=lambda v: v.isoformat().replace("+00:00", "Z")))
            return
        if not items:
            typer.echo(f"no {status} alerts")
            return
        for item in items:
            at = item["ends_at"] if status == "resolved" else item["starts_at"] or item["pending_since"]
            labels = item["labels"]
            where = " ".join(f"{k}={labels[k]}" for k in ("host", "guest") if k in labels)
            muted = " (silenced)" if item["silenced"] else ""
            name = labels.get("alertname", item["rule"])
            summary = item["annotations"].get("summary", "")
            typer.echo(
                f"{at:%Y-%m-%dT%H:%M:%SZ}\t{name}\t{labels.get('severity', '-')}\t{where or '-'}"
                f"\t{summary}{muted}"
            )
