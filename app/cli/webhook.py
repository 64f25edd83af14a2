"""`splitwatch webhook test ID`: send a signed test notice to a webhook now and say how it went."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.alerts import open_database
from app.cli.token import DatabaseUrl


def register(cli: typer.Typer) -> None:
    hook = typer.Typer(help="Alert webhooks.", no_args_is_help=True)

    @hook.command("test")
    def test(
        webhook_id: Annotated[int, typer.Argument(help="The webhook's id (GET /api/v1/webhooks).")],
        database_url: DatabaseUrl = None,
    ) -> None:
        """Send a signed test notice (alertname SplitwatchTest) to the webhook, once, and print the answer.

        The attempt is written to the webhook's delivery log. Honours SPLITWATCH_WEBHOOK_ALLOW_PRIVATE
        and SPLITWATCH_WEBHOOK_TIMEOUT_S like the server."""
        import asyncio
        from collections.abc import Callable
        from typing import Any

        from sqlalchemy import Connection

        from app.alerts.outbox import send_test
        from app.store.alerting import get_delivery

        engine, settings = open_database(database_url, "splitwatch webhook test")

        async def run_tx(fn: Callable[[Connection], Any]) -> Any:
            with engine.begin() as conn:
                return fn(conn)

        try:
            delivery_id = asyncio.run(send_test(engine, run_tx, settings, webhook_id))
            if delivery_id is None:
                typer.echo(
                    f"splitwatch webhook test: no webhook {webhook_id}: GET /api/v1/webhooks lists them",
                    err=True,
                )
                raise typer.Exit(1)
            with engine.connect() as conn:
                d = get_delivery(conn, webhook_id, delivery_id)
        finally:
            engine.dispose()
        assert d is not None
        code = d["last_status_code"]
        latency = f" in {d['latency_ms']} ms" if d["latency_ms"] is not None else ""
        if d["status"] == "delivered":
            typer.echo(f"webhook {webhook_id}: delivered, HTTP {code}{latency} (webhook-id {d['msg_id']})")
            return
        answer = f"HTTP {code}" if code is not None else "no answer"
        typer.echo(
            f"splitwatch webhook test: webhook {webhook_id}: {d['status']}, {answer}{latency}: "
            f"{d['last_error']}",
            err=True,
        )
        raise typer.Exit(1)

    cli.add_typer(hook, name="webhook")
