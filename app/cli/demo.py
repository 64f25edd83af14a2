"""`splitwatch demo`: the backend plus a simulated fleet driven by real agents (app/demo.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(cli: typer.Typer) -> None:
    @cli.command("demo")
    def demo(
        port: Annotated[int, typer.Option("--port", help="Port of the backend on 127.0.0.1.")] = 8000,
        hosts: Annotated[int, typer.Option("--hosts", help="Simulated hosts, each with its own agent.")] = 12,
        directory: Annotated[
            Path,
            typer.Option(
                "--dir",
                help="Demo directory (database, fake hosts, spools, logs); reset on every run.",
            ),
        ] = Path("splitwatch-demo"),
        seed: Annotated[int, typer.Option("--seed", help="Fixes the fleet's sequence of events.")] = 0,
        database_url: Annotated[
            str | None,
            typer.Option(
                "--database-url",
                envvar="SPLITWATCH_DATABASE_URL",
                help="SQLAlchemy URL, reused as it is [default: a SQLite file in --dir, reset each run].",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Run the backend and a simulated fleet of agents; print the dashboard URL and a viewer token.

        Ctrl-C (or SIGTERM) stops everything. docs/demo.md says what to look at.
        """
        from app.demo import DemoError, DemoOptions, run

        def say(line: str) -> None:
            typer.echo(line)

        options = DemoOptions(port=port, hosts=hosts, dir=directory, seed=seed, database_url=database_url)
        try:
            code = run(options, say)
        except DemoError as exc:
            typer.echo(f"splitwatch demo: {exc}", err=True)
            raise typer.Exit(1) from None
        raise typer.Exit(code)
