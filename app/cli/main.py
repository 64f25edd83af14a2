"""Entry point of the `splitwatch` console script."""

from __future__ import annotations

import importlib
import sys

import typer

# Order is the order `splitwatch --help` lists them in.
SUBCOMMANDS = ("agent", "simulate", "import_cmd", "doctor", "serve", "demo", "db", "token")

cli = typer.Typer(
    name="splitwatch",
    help="Fleet-wide split-lock telemetry for KVM hosts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: readable in any terminal and stable enough to embed in docs/cli.md.
    rich_markup_mode=None,
)


def _register_all() -> None:
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"app.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"app.cli.{name}":
                raise
            continue  # not built yet
        module.register(cli)


_register_all()


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["agent"] and not {"--help", "-h"} & set(argv[1:]):
        # The agent runs on every host under a 30 MB budget: typer parses parameters through
        # pydantic (~15 MB resident), so `agent` goes straight to its stdlib parser.
        from app.cli.agent import main as agent_main

        sys.exit(agent_main(argv[1:]))
    cli()


if __name__ == "__main__":
    main()
