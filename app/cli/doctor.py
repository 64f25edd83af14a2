"""`splitwatch doctor`: a one-shot report on one host's split-lock set-up (agent/doctor.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from agent.doctor import Report


def register(cli: typer.Typer) -> None:
    cli.command(name="doctor")(doctor)


def doctor(
    root: Path = typer.Option(Path("/"), "--root", help="Root of the host to examine."),
    recent: int = typer.Option(10, "--recent", min=0, help="How many recent events to list."),
) -> None:
    """Is split-lock detection supported and on, on which cores, in which mode, what happened
    lately, and what is wrong (with remedies). Exit code 0: no problem found; 1: problems."""
    import sys

    from agent.doctor import diagnose, format_report
    from agent.errors import SplitwatchAgentError

    if not root.is_dir():
        typer.echo(
            f"doctor: host root {root} is not a directory: pass the root of a host (--root /)", err=True
        )
        raise typer.Exit(2)
    try:
        report = diagnose(root, recent=recent)
    except SplitwatchAgentError as exc:
        typer.echo(f"doctor: {exc}", err=True)
        raise typer.Exit(2) from None
    if sys.stdout.isatty():
        _print_rich(report)
    else:
        sys.stdout.write(format_report(report))
    raise typer.Exit(0 if report.ok else 1)


def _print_rich(report: Report) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(soft_wrap=True, highlight=False)
    console.print(Text(f"splitwatch doctor: {report.host}", style="bold"))
    console.print()
    for section in report.sections:
        console.print(Text(section.title, style="bold cyan"))
        for line in section.lines:
            console.print(Text(f"  {line}"))  # Text, not markup: a COMM may hold `[`
        console.print()
    if report.problems:
        console.print(Text(f"Problems ({len(report.problems)})", style="bold red"))
        for p in report.problems:
            console.print(Text(f"  ✗ {p.what}", style="red"))
            console.print(Text(f"    → {p.remedy}"))
    else:
        console.print(Text("No problems found.", style="bold green"))
