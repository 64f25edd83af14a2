"""Entry point of the `splitwatch` console script.

`splitwatch agent ...` goes straight to agent.cli.main, before typer is imported: the agent runs
on every host under a 30 MB budget and typer parses parameters through pydantic (~15 MB
resident). Every other subcommand (and `agent --help`) goes through the typer app, built on
first use from the modules app/cli/<name>.py, each exposing `register(cli)`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

# Order is the order `splitwatch --help` lists them in.
SUBCOMMANDS = (
    "agent", "simulate", "import_cmd", "doctor", "serve", "demo", "db", "token", "alerts", "webhook",
)  # fmt: skip


@cache
def build_cli() -> typer.Typer:
    import typer

    app = typer.Typer(
        name="splitwatch",
        help="Fleet-wide split-lock telemetry for KVM hosts.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Plain click help: readable in any terminal and stable enough to embed in docs/cli.md.
        rich_markup_mode=None,
    )
    for name in SUBCOMMANDS:
        importlib.import_module(f"app.cli.{name}").register(app)
    return app


def __getattr__(name: str) -> typer.Typer:
    # `from app.cli.main import cli` (tests, docs) builds the typer app lazily.
    if name == "cli":
        return build_cli()
    raise AttributeError(name)


SERVER_EXTRA = "pip install 'splitwatch[server]'"


def _server_installed() -> bool:
    # typer (with click and rich) comes with the server extra (issue 17): an agent-only install
    # has none of it, and `splitwatch serve` there must say what to install, not trace back.
    return importlib.util.find_spec("typer") is not None


def main() -> None:
    argv = sys.argv[1:]
    wants_help = bool({"--help", "-h"} & set(argv[1:]))
    if argv[:1] == ["agent"] and (not wants_help or not _server_installed()):
        from agent.cli import main as agent_main

        sys.exit(agent_main(argv[1:]))
    if sys.version_info < (3, 11):
        running = "{}.{}".format(*sys.version_info[:2])
        sys.stderr.write(
            f"splitwatch: only `splitwatch agent` runs on Python {running}; "
            "the server and its commands need Python 3.11 or later\n"
        )
        sys.exit(2)
    if not _server_installed():
        command = f"`splitwatch {argv[0]}`" if argv else "this command"
        sys.stderr.write(
            f"splitwatch: {command} needs the server extra, which this install does not have "
            f"(only `splitwatch agent` runs without it): {SERVER_EXTRA}\n"
        )
        sys.exit(2)
    build_cli()()


if __name__ == "__main__":
    main()
