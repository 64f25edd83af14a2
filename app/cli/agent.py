"""`splitwatch agent`: the host agent — stream to a backend, or collect once and print the payloads.

Two front doors to the same `agent.cli.run_agent()`: this typer command (listed by `splitwatch
--help`, documented in docs/cli.md) and `agent.cli.main(argv)`, a stdlib argparse parser with the
same options that the `splitwatch` entry point hands `agent` to, so hosts never load pydantic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from agent.cli import DESCRIPTION, main, run_agent

__all__ = ["agent_command", "main", "register"]


def register(cli: typer.Typer) -> None:
    cli.command(name="agent", help=DESCRIPTION)(agent_command)


def agent_command(
    server: str | None = typer.Option(
        None, "--server", envvar="SPLITWATCH_SERVER", help="Backend URL, e.g. https://splitwatch:8000."
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="SPLITWATCH_AGENT_TOKEN", help="Agent token (`splitwatch token create`)."
    ),
    ca_file: Path | None = typer.Option(
        None,
        "--ca-file",
        envvar="SPLITWATCH_CA_FILE",
        help="PEM bundle of the private CA that signed an https --server's certificate.",
    ),
    enroll_token: Path | None = typer.Option(
        None,
        "--enroll-token",
        metavar="FILE",
        help="File holding an enrollment token (`splitwatch token create --role enroll`; or the token "
        "itself in SPLITWATCH_ENROLL_TOKEN): on first run the agent trades it for this host's own agent "
        "token, kept 0600 in STATE_DIR/agent-token and used from then on.",
    ),
    root: Path = typer.Option(Path("/"), "--root", help="Root of the host to watch (a fake host in tests)."),
    interval: float = typer.Option(10.0, "--interval", help="Seconds between collection passes."),
    spool: Path | None = typer.Option(
        None, "--spool", help="Spool directory [default: STATE_DIR/spool, or /var/lib/splitwatch/spool]."
    ),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="Where the kernel-log cursor is kept [default: /var/lib/splitwatch]."
    ),
    no_tracefs: bool = typer.Option(
        False, "--no-tracefs", help="Do not register kprobes; count from the kernel log only."
    ),
    once: bool = typer.Option(False, "--once", help="One collection pass, then exit."),
    stdout: bool = typer.Option(
        False, "--stdout", help="With --once: print the payloads as JSON, one per line, instead of sending."
    ),
) -> None:
    code = run_agent(
        server=server,
        token=token,
        root=root,
        interval=interval,
        spool=spool,
        state_dir=state_dir,
        use_tracefs=not no_tracefs,
        once=once,
        stdout=stdout,
        ca_file=ca_file,
        enroll_token=enroll_token,
    )
    raise typer.Exit(code)


if __name__ == "__main__":
    sys.exit(main())
