"""`splitwatch simulate`: write a fleet of fake hosts and keep them changing (agent/simulate.py)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(cli: typer.Typer) -> None:
    cli.command(name="simulate")(simulate)


def simulate(
    root: Path = typer.Option(..., "--root", help="Directory to create the fake hosts in, one per host."),
    hosts: int = typer.Option(12, "--hosts", min=1, help="Number of hosts."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same sequence of happenings."),
    duration: float = typer.Option(60.0, "--duration", min=0.0, help="Seconds to run, then stop."),
    forever: bool = typer.Option(False, "--forever", help="Run until interrupted (Ctrl-C)."),
    tick: float = typer.Option(1.0, "--tick", min=0.01, help="Seconds between changes."),
    tracefs: bool = typer.Option(
        False, "--tracefs", help="Give every host a tracefs whose kprobe hits count every trap."
    ),
) -> None:
    """Build N fake hosts under ROOT/<hostname>/ and keep them changing: guests split-locking in
    bursts, a fatal host killing two guests, a host whose detection drifts off, one per consistency
    verdict (5.4, stuck off, vboxdrv, wrmsr on a host booted off), one per kernel era past the
    first dozen (RHEL 8, 5.13, 5.15, 5.19, 6.1.0, 6.6, 6.15), kmsg overruns, suppressed lines, a
    forged record. Point `splitwatch agent --root` at one."""
    import threading
    import time

    from agent.simulate import Fleet, FleetError
    from agent.stop_signals import stop_on_signals

    if root.exists() and not root.is_dir():
        typer.echo(f"simulate: {root} is not a directory: choose another --root", err=True)
        raise typer.Exit(2)
    fleet = Fleet(root, hosts=hosts, seed=seed, tick_s=tick, tracefs=tracefs)
    try:
        fleet.build()
    except FleetError as exc:
        typer.echo(f"simulate: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(
            f"simulate: cannot write the fake hosts under {root} ({exc.strerror}): choose a writable --root",
            err=True,
        )
        raise typer.Exit(1) from None
    for line in fleet.summary():
        typer.echo(line)
    # Ctrl-C / SIGTERM set an Event instead of raising: a signal landing between two statements
    # (even before the loop starts) still ends the run cleanly, with exit 0. Set without a lock
    # in the handler (agent/stop_signals.py: Event.set there can deadlock the waiting thread).
    stop = threading.Event()
    with stop_on_signals(stop):
        typer.echo(f"simulating {hosts} hosts every {tick:g} s" + ("" if forever else f" for {duration:g} s"))
        deadline = None if forever else time.monotonic() + duration
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                next_at = time.monotonic() + tick
                fleet.tick()
                pause = next_at - time.monotonic()
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                if pause > 0:
                    stop.wait(pause)
        except OSError as exc:
            typer.echo(f"simulate: cannot update the fake hosts under {root} ({exc.strerror})", err=True)
            raise typer.Exit(1) from None
    typer.echo(f"stopped after {fleet.ticks} ticks")
