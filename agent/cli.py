"""`splitwatch agent`'s own front door: an argparse parser and `run_agent()`, stdlib only.

The agent runs on every host under a 30 MB budget (docs/benchmarks.md). typer parses parameters
through pydantic (~15 MB resident), so `splitwatch agent ...` is handed here by app/cli/main.py
before typer is imported; app/cli/agent.py wraps the same `run_agent()` for `--help` and docs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

DESCRIPTION = (
    "Watch one host: MSR state, split-lock and bus-lock traps from the kernel log, guest attribution, "
    "optional tracefs counts; spool durably and send to the backend. `--once --stdout` collects once and "
    "prints the ingest payload(s), one JSON per line: it resumes from --state-dir's cursor and advances "
    "it when given; without --state-dir it reads the whole log and keeps nothing."
)


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def main(argv: list[str] | None = None, *, prog: str = "splitwatch agent") -> int:
    """`splitwatch agent ARGS` without typer: the same options, parsed by argparse. `prog`: the
    name in --help and errors (`splitwatch-agent` when run from the zipapp)."""
    import argparse
    import os

    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--server", default=os.environ.get("SPLITWATCH_SERVER"), help="Backend URL.")
    parser.add_argument("--token", default=os.environ.get("SPLITWATCH_AGENT_TOKEN"), help="Agent token.")
    parser.add_argument(
        "--ca-file",
        type=Path,
        default=os.environ.get("SPLITWATCH_CA_FILE") or None,
        help="PEM bundle of the private CA that signed an https --server's certificate.",
    )
    parser.add_argument(
        "--enroll-token", type=Path, default=None, metavar="FILE", help="Enrollment token file (first run)."
    )
    parser.add_argument("--root", type=Path, default=Path("/"), help="Root of the host to watch.")
    parser.add_argument("--interval", type=float, default=10.0, help="Seconds between passes.")
    parser.add_argument("--spool", type=Path, default=None, help="Spool directory.")
    parser.add_argument("--state-dir", type=Path, default=None, help="Where the cursor is kept.")
    parser.add_argument("--no-tracefs", action="store_true", help="Do not register kprobes.")
    parser.add_argument("--once", action="store_true", help="One collection pass, then exit.")
    parser.add_argument("--stdout", action="store_true", help="With --once: print the payloads.")
    args = parser.parse_args(argv)
    return run_agent(
        server=args.server,
        token=args.token,
        root=args.root,
        interval=args.interval,
        spool=args.spool,
        state_dir=args.state_dir,
        use_tracefs=not args.no_tracefs,
        once=args.once,
        stdout=args.stdout,
        ca_file=args.ca_file,
        enroll_token=args.enroll_token,
    )


def run_agent(
    *,
    server: str | None,
    token: str | None,
    root: Path,
    interval: float,
    spool: Path | None,
    state_dir: Path | None,
    use_tracefs: bool,
    once: bool,
    stdout: bool,
    ca_file: Path | None = None,
    enroll_token: Path | None = None,
) -> int:
    """Run the agent; returns the exit code. Expected failures end as one sentence on stderr."""
    import logging

    from agent.errors import SplitwatchAgentError

    logging.basicConfig(
        level=logging.WARNING if once and stdout else logging.INFO,
        format="splitwatch agent: %(message)s",
        stream=sys.stderr,
    )
    try:
        if stdout and not once:
            _fail("--stdout prints one pass: add --once (or drop --stdout to stream to --server)", 2)
        if not root.is_dir():
            _fail(f"host root {root} is not a directory: pass the root of the host to watch (--root /)", 2)
        if once and stdout:
            return _once_to_stdout(root, state_dir)
        return _run_loop(
            server, token, root, interval, spool, state_dir, use_tracefs, once, ca_file, enroll_token
        )
    except SplitwatchAgentError as exc:
        sys.stderr.write(f"splitwatch agent: {exc}\n")
        return 1
    except _Exit as exc:
        return exc.code


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"splitwatch agent: {message}\n")
    raise _Exit(code)


def _once_to_stdout(root: Path, state_dir: Path | None) -> int:
    from agent.collect import Collector

    # No tracefs here: kprobes count only from the moment they are enabled, so a single pass
    # would register them, count nothing and remove them again.
    collector = Collector(root, state_dir, use_tracefs=False)
    try:
        collected = collector.collect()
        try:
            for payload in collected.payloads:
                sys.stdout.write(payload.to_json() + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader went away (`| head`): nothing was delivered for sure, so do not commit.
            sys.stderr.write("splitwatch agent: stdout closed before all payloads were written\n")
            return 1
        try:
            collected.commit()  # a no-op without --state-dir
        except OSError as exc:
            _fail(
                f"cannot save the cursor in {state_dir} ({exc.strerror}): the payloads were printed, "
                "but the next run will print them again; make the state directory writable",
                1,
            )
    finally:
        collector.close()
    return 0


def _run_loop(
    server: str | None,
    token: str | None,
    root: Path,
    interval: float,
    spool: Path | None,
    state_dir: Path | None,
    use_tracefs: bool,
    once: bool,
    ca_file: Path | None = None,
    enroll_token: Path | None = None,
) -> int:
    import os

    from agent.config import DEFAULT_SPOOL_DIR, DEFAULT_STATE_DIR, AgentConfig
    from agent.enroll import obtain_token, token_path
    from agent.loop import run

    if not server:
        _fail("no backend to send to: pass --server URL (or --once --stdout to print instead)", 2)
    state = state_dir if state_dir is not None else DEFAULT_STATE_DIR
    token_file = None
    enroll_env = os.environ.get("SPLITWATCH_ENROLL_TOKEN") or None
    # #15: --token wins; else the token this host got at enrollment; else enroll now.
    if not token and (enroll_token is not None or enroll_env or token_path(state).exists()):
        try:
            token = obtain_token(
                server=server,
                enroll_token_file=enroll_token,
                enroll_token=enroll_env,
                state_dir=state,
                root=root,
                once=once,
                ca_file=ca_file,
            )
        except KeyboardInterrupt:
            return 130  # nothing collected yet, nothing to flush
        token_file = token_path(state)
    if not token:
        _fail(
            "no agent token: pass --enroll-token FILE (or SPLITWATCH_ENROLL_TOKEN) with an enrollment "
            "token (`splitwatch token create --role enroll`), or create an agent token with "
            "`splitwatch token create --role agent --host NAME` and pass it with --token "
            "(or SPLITWATCH_AGENT_TOKEN)",
            2,
        )
    if spool is None:
        spool = state_dir / "spool" if state_dir is not None else DEFAULT_SPOOL_DIR
    config = AgentConfig(
        server=server,
        token=token,
        root=root,
        interval_s=interval,
        spool_dir=spool,
        state_dir=state,
        use_tracefs=use_tracefs,
        max_passes=1 if once else None,
        ca_file=ca_file,
        token_file=token_file,
    )
    code: int = run(config)
    return code


if __name__ == "__main__":
    sys.exit(main())
