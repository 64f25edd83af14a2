"""`splitwatch import FILE...`: kernel log text (dmesg, journalctl, syslog) into splitwatch events.

The module is named import_cmd because `import` is a Python keyword; the command is `import`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from datetime import tzinfo

    from agent.importer import ImportResult
    from agent.payload import Payload

SEND_ATTEMPTS = 3  # a one-shot command: a few seconds of patience, then say so (re-running is safe)


def register(cli: typer.Typer) -> None:
    cli.command(name="import")(import_command)


def import_command(
    files: list[Path] = typer.Argument(
        ...,
        metavar="FILE...",
        help="Log files (- for stdin): dmesg in any timestamp style, journalctl, syslog, a /dev/kmsg dump.",
        show_default=False,
    ),
    host: str | None = typer.Option(
        None, "--host", help="Host the lines came from [default: the host field of syslog/journal lines]."
    ),
    boot_id: str | None = typer.Option(
        None, "--boot-id", help="Boot the lines belong to (proc/sys/kernel/random/boot_id) [default: import]."
    ),
    mode: str | None = typer.Option(
        None,
        "--mode",
        help="split_lock_detect mode of that boot: off|warn|fatal|ratelimit (sets the action).",
    ),
    mitigate: int | None = typer.Option(
        None, "--mitigate", help="kernel.split_lock_mitigate of that boot: 0|1 (warn mode, 5.19+)."
    ),
    kernel: str | None = typer.Option(None, "--kernel", help="Kernel release of that boot, e.g. 6.8."),
    year: int | None = typer.Option(
        None, "--year", help="Year of syslog dates, which have none [default: this year, or last if future]."
    ),
    btime: int | None = typer.Option(
        None,
        "--btime",
        help="Boot time (epoch seconds, btime in /proc/stat) to date dmesg `[  688.79]` lines.",
    ),
    tz: str = typer.Option(
        "UTC", "--tz", help="Time zone of local times (syslog, dmesg -T/-H): UTC, +02:00 or Europe/Berlin."
    ),
    stdout: bool = typer.Option(False, "--stdout", help="Print the payloads as JSON, one per line."),
    server: str | None = typer.Option(
        None, "--server", envvar="SPLITWATCH_SERVER", help="Backend URL to send the events to."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="SPLITWATCH_AGENT_TOKEN",
        help="Token for --server (agent token of that host).",
    ),
) -> None:
    """Import split-lock and bus-lock lines from kernel log text. Every timestamp style is read,
    per line; importing the same file twice stores nothing new. A summary goes to stderr: lines
    read, events, undated lines (named, with what would date them), unparsable split-lock lines."""
    import sys
    import time
    from datetime import UTC, datetime

    from agent.errors import SplitwatchAgentError
    from agent.importer import ImportOptions, import_lines, payloads, read_lines
    from agent.payload import Mode

    if stdout == (server is not None):
        _fail("choose where the events go: --stdout, or --server URL --token TOKEN", 2)
    if server is not None and not token:
        _fail("--server needs --token (an agent token: splitwatch token create --role agent --host NAME)", 2)
    modes = {m.value: m for m in Mode}
    if mode is not None and mode not in modes:
        _fail(f"--mode {mode!r} is not one of {'|'.join(modes)}", 2)
    if mitigate not in (None, 0, 1):
        _fail(f"--mitigate {mitigate} must be 0 or 1 (kernel.split_lock_mitigate)", 2)
    options = ImportOptions(
        host=host,
        boot_id=boot_id,
        mode=modes[mode] if mode is not None else None,
        mitigate=mitigate,
        kernel=kernel,
        year=year,
        btime=btime,
        tz=_zone(tz),
    )
    started = time.monotonic()

    def progress(count: int) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        typer.echo(f"splitwatch import: {count} lines read ({count / elapsed:,.0f} lines/s)", err=True)

    try:
        result = import_lines(read_lines(files, progress=progress), options, now=datetime.now(UTC))
        batches = payloads(result)
        if stdout:
            for payload in batches:
                sys.stdout.write(payload.to_json() + "\n")
            sys.stdout.flush()
        else:
            assert server is not None and token is not None
            _send(batches, server, token)
    except SplitwatchAgentError as exc:
        _fail(str(exc), 1)
    _report(result, time.monotonic() - started)


def _report(result: ImportResult, elapsed_s: float) -> None:
    rate = result.lines_read / max(elapsed_s, 1e-6)
    typer.echo(result.summary(), err=True)
    typer.echo(f"took {elapsed_s:.2f}s ({rate:,.0f} lines/s)", err=True)


def _send(batches: list[Payload], server: str, token: str) -> None:
    import time

    from agent import __version__
    from agent.transport import Rejected, Retry, Transport

    transport = Transport(server, token, timeout_s=30.0, agent_version=__version__)
    accepted = duplicates = 0
    try:
        for number, payload in enumerate(batches, start=1):
            body = payload.to_json().encode()
            for attempt in range(SEND_ATTEMPTS):
                answer = transport.post(body)
                if isinstance(answer, Retry):
                    if attempt == SEND_ATTEMPTS - 1:
                        _fail(
                            f"batch {number}/{len(batches)} not sent after {SEND_ATTEMPTS} tries: "
                            f"{answer.reason}. Run the same import again once the server answers: "
                            "what was sent is not stored twice",
                            1,
                        )
                    time.sleep(min(answer.after_s or 2.0**attempt, 30.0))
                    continue
                if isinstance(answer, Rejected):
                    _fail(_rejected(answer.status, answer.reason, number, len(batches), payload), 1)
                accepted += answer.accepted
                duplicates += answer.duplicates
                break
    finally:
        transport.close()
    typer.echo(
        f"sent {len(batches)} batches to {server}: {accepted} events accepted, {duplicates} already there",
        err=True,
    )


def _rejected(status: int, reason: str, number: int, total: int, payload: Payload) -> str:
    where = f"batch {number}/{total} (host {payload.host.name}, {len(payload.events)} events)"
    if status == 401:
        return (
            f"the server refused the token ({reason}): create one with "
            "`splitwatch token create --role agent --host NAME` and pass it with --token"
        )
    if status == 403:
        return (
            f"the token may not write host {payload.host.name} ({reason}): use that host's agent token, "
            "or --host with the host the token belongs to"
        )
    if status == 413:
        # Too large a body, or too many new guests for one batch (#14): the reason names the
        # server setting to raise.
        return f"{where} is more than the server accepts in one batch ({reason})"
    return f"the server cannot read {where} ({reason}): check --host, --boot-id and --kernel"


def _zone(text: str) -> tzinfo:
    import re
    from datetime import UTC, timedelta, timezone
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if text.upper() in ("UTC", "Z"):
        return UTC
    m = re.fullmatch(r"([+-])([0-9]{2}):?([0-9]{2})", text)
    if m is not None:
        minutes = int(m[2]) * 60 + int(m[3])
        if minutes < 24 * 60:
            return timezone(timedelta(minutes=minutes if m[1] == "+" else -minutes))
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        _fail(
            f"--tz {text!r} is not a time zone: give UTC, an offset like +02:00, or a name like Asia/Tokyo",
            2,
        )


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"splitwatch import: {message}", err=True)
    raise typer.Exit(code)
