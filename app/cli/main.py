"""Entry point of the `splitwatch` console script.

`splitwatch agent ...` goes straight to agent.cli.main, before typer is imported: the agent runs
on every host under a 30 MB budget and typer parses parameters through pydantic (~15 MB
resident). Every other subcommand (and `agent --help`) goes through the typer app, built on
first use from the modules app/cli/<name>.py, each exposing `register(cli)`.
"""

from __future__ import annotations

import importlib
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


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["agent"] and not {"--help", "-h"} & set(argv[1:]):
        from agent.cli import main as agent_main

        sys.exit(agent_main(argv[1:]))
    build_cli()()


if __name__ == "__main__":
    main()
