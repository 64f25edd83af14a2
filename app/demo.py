"""`splitwatch demo`: the whole product on one machine, driven by real agents over real HTTP.

Steps, each announced on one line:

1. the demo directory (`--dir`, default ./splitwatch-demo) is reset: the previous run's SQLite
   database, fake hosts, agent spools and logs are removed. A directory that is not a demo's
   (no `.splitwatch-demo` marker) is never touched. With SPLITWATCH_DATABASE_URL the database
   is the user's and is reused, never emptied (the fleet boots with fresh boot_ids, so new
   events are not taken for duplicates of an earlier run's);
2. the database is upgraded to the migration head;
3. the simulated fleet (agent/simulate.py `Fleet`, with tracefs so counts are true counts) is
   laid out under DIR/hosts;
4. one viewer token and one agent token per host (each writes only its own host);
5. the backend (create_app under uvicorn) listens on 127.0.0.1:PORT, its JSON log in DIR/logs;
6. BACKFILL: the 6 hours before the start, synthetic. Per minute, per vCPU thread, the trap
   count the fleet's own model (each workload's burst chance and rate) draws, sent as
   `source: "import"` events through POST /api/v1/ingest with that host's agent token, so no
   backfilled number passes for one an agent measured. History older than a host's boot
   carries a previous boot_id; the fatal host has none (its noisy guest has not trapped yet);
   a 5.x host before 5.19 traps once per thread (TIF_SLD). Skipped on a reused database that
   already knows the fleet's hosts;
7. one real `splitwatch agent` process per host (`--root DIR/hosts/NAME`, interval 2 s);
   then the fleet ticks once a second in this process until SIGINT or SIGTERM, which stop the
   agents (SIGTERM, a bounded final flush), the simulator and the server, and print `stopped`.

Everything is checked before anything is removed: a port in use ends the demo with a sentence
and exit 1, the previous run's files intact.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from agent.stop_signals import stop_on_signals

MARKER = ".splitwatch-demo"
DEFAULT_DIR = Path("splitwatch-demo")
DEFAULT_PORT = 8000
DEFAULT_HOSTS = 12
BACKFILL_HOURS = 6.0
TICK_S = 1.0  # agent/simulate.py's burst chances are tuned per 1 s tick
AGENT_INTERVAL_S = 2.0
AGENT_STOP_S = 6.0  # SIGTERM: the agent's last flush is bounded by a few seconds
SERVER_START_S = 30.0
FIRST_REPORT_S = 60.0  # agents' first passes on a busy machine (a dozen Python starts)
BATCH_EVENTS = 1000
EPISODE_BUSY_MIN = (5, 45)  # backfill: minutes a workload stays busy, then quiet
EPISODE_QUIET_MIN = (10, 90)
STEPS = 7

log = logging.getLogger("splitwatch.demo")


class DemoError(Exception):
    """An expected failure: the message names the thing, the cause and the remedy."""


class _Stopped(Exception):
    """SIGINT or SIGTERM arrived during setup."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    port: int = DEFAULT_PORT
    hosts: int = DEFAULT_HOSTS
    dir: Path = DEFAULT_DIR
    seed: int = 0
    database_url: str | None = None  # None: a SQLite file in `dir`, reset on each run
    backfill_hours: float = BACKFILL_HOURS
    tick_s: float = TICK_S
    agent_interval_s: float = AGENT_INTERVAL_S

    def check(self) -> None:
        if not 1 <= self.port <= 65535:
            raise DemoError(f"--port {self.port} is not a TCP port: give one in 1..65535")
        if not 1 <= self.hosts <= 500:
            raise DemoError(f"--hosts {self.hosts} is out of range: a demo fleet has 1..500 hosts")
        if not 0 <= self.backfill_hours <= 24 * 7:
            raise DemoError(f"backfill of {self.backfill_hours} h is out of range: use 0..168 hours")


# --------------------------------------------------------------------------- backfill (pure)


_VMM_NAMES = {
    "libvirt": "qemu",
    "qemu": "qemu",
    "proxmox": "qemu",
    "kata": "qemu",
    "firecracker": "firecracker",
    "cloud-hypervisor": "cloud-hypervisor",
    "crosvm": "crosvm",
}


@dataclass(frozen=True, slots=True)
class BackfillThread:
    """One thread of a workload, as the live agent would attribute its traps."""

    comm: str
    tid: int
    tgid: int
    guest: Any  # agent.payload.Guest | None


@dataclass(frozen=True, slots=True)
class BackfillWorkload:
    name: str
    is_guest: bool
    bus_locks: bool
    rate: float  # mean traps per 1 s tick while bursting (agent/simulate.py Workload.rate)
    burst_p: float  # chance per tick that a burst starts
    threads: tuple[BackfillThread, ...]


@dataclass(frozen=True, slots=True)
class BackfillHost:
    name: str
    kernel: str
    cpu_model: str
    mode: str  # off, warn, fatal, ratelimit:N
    mitigate: int | None
    boot_id: str
    booted_at: datetime
    workloads: tuple[BackfillWorkload, ...]


@dataclass
class _Burst:
    left: int = 0


def backfill_events(
    host: BackfillHost, *, start: datetime, end: datetime, seed: int
) -> list[tuple[str, Any]]:
    """(boot_id, agent.payload.Event) for every minute in [start, end) with traps, oldest first.

    The workload model is agent/simulate.py's, ticked once per simulated second: a burst
    starts with chance `burst_p`, lasts 1-5 ticks, and each of its ticks traps
    round(expovariate(1/rate)) times on a random vCPU thread. On top of it, episodes: a
    workload is busy for 5-45 minutes, then quiet for 10-90. One event per thread per minute
    carries that minute's count, like a tracefs pass does per thread.
    """
    from agent.kernel.modes import derive_action, parse_kernel_release
    from agent.payload import Event, Kind, Mode, Source

    mode = host.mode.split(":", 1)[0]
    if mode in ("off", "fatal"):
        # off: nothing traps. fatal: a guest's first trap kills it and a task's kills the
        # task; the fatal host's noisy guest is the one killed live, so it has no history.
        return []
    kernel = parse_kernel_release(host.kernel)
    rng = random.Random(f"{seed}:{host.name}")
    out: list[tuple[str, Any]] = []
    previous_boot = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
    seq = 0
    for work in host.workloads:
        if work.rate <= 0 or work.burst_p <= 0 or not work.threads:
            continue
        if mode == "ratelimit" and not work.bus_locks:
            continue  # #AC is off in ratelimit mode; only bus locks are seen
        kind = Kind.BUS_LOCK if work.bus_locks else Kind.SPLIT_LOCK
        probe = (
            "handle_bus_lock"
            if work.bus_locks
            else ("handle_guest_split_lock" if work.is_guest else "split_lock_warn")
        )
        action = derive_action(
            kind,
            probe,
            mode=Mode(mode),
            mitigate=host.mitigate,
            kernel=kernel,
            guest=work.is_guest,
        )
        once_per_thread = kind is Kind.SPLIT_LOCK and kernel < (5, 19)  # TIF_SLD: traps once
        trapped: set[int] = set()
        burst = _Burst()
        # Episodes over the per-second bursts: a workload is busy for a while (a batch job,
        # a load peak), then quiet, so six hours read as the peaks and lulls a fleet has.
        active = rng.random() < 0.5
        episode_left = rng.randrange(*(EPISODE_BUSY_MIN if active else EPISODE_QUIET_MIN))
        minute = start.replace(second=0, microsecond=0)
        while minute < end:
            if episode_left == 0:
                active = not active
                episode_left = rng.randrange(*(EPISODE_BUSY_MIN if active else EPISODE_QUIET_MIN))
            episode_left -= 1
            counts: dict[int, int] = {}
            first: dict[int, int] = {}
            for second in range(60 if active else 0):
                if burst.left == 0 and rng.random() < work.burst_p:
                    burst.left = rng.randrange(1, 6)
                if burst.left == 0:
                    continue
                burst.left -= 1
                for _ in range(max(0, round(rng.expovariate(1.0 / work.rate)))):
                    index = rng.randrange(len(work.threads))
                    if once_per_thread and index in trapped:
                        continue
                    trapped.add(index)
                    counts[index] = counts.get(index, 0) + 1
                    first.setdefault(index, second)
            for index in sorted(counts):
                at = minute + timedelta(seconds=first[index], microseconds=rng.randrange(1_000_000))
                # Drawn before the window check: an event cut at the window's edge must not
                # shift the random stream of every event after it (#17).
                address = (
                    f"0xffffffff{rng.randrange(0x81000000, 0x82000000):08x}"
                    if work.is_guest and rng.random() < 0.3
                    else f"0x{rng.randrange(0x400000, 0x7FFFFFFF):x}"
                )
                if not start <= at < end:
                    continue
                thread = work.threads[index]
                event = Event(
                    source=Source.IMPORT,
                    seq=seq,
                    time=at,
                    kind=kind,
                    comm=thread.comm,
                    tid=thread.tid,
                    tgid=thread.tgid,
                    address=address,
                    count=counts[index],
                    action=action,
                    guest=thread.guest,
                )
                seq += 1
                out.append((host.boot_id if at >= host.booted_at else previous_boot, event))
            minute += timedelta(minutes=1)
    out.sort(key=lambda pair: pair[1].time)
    return out


def backfill_window(now: datetime, hours: float) -> tuple[datetime, datetime]:
    """The backfill's [start, end): `hours` up to the last whole minute before `now`.

    Whole minutes make the synthetic history a function of the seed alone (#17): with the
    seconds of `now` in it, the first minute was cut at a different point on every run and
    the same `--seed` gave different counts.
    """
    end = now.replace(second=0, microsecond=0)
    return end - timedelta(hours=hours), end


def backfill_payloads(
    host: BackfillHost, *, start: datetime, end: datetime, seed: int, batch: int = BATCH_EVENTS
) -> Iterator[Any]:
    """agent.payload.Payload batches (state null: no claim about the past state) for `host`."""
    from agent.payload import HostInfo, Payload

    events = backfill_events(host, start=start, end=end, seed=seed)
    by_boot: dict[str, list[Any]] = {}
    for boot_id, event in events:
        by_boot.setdefault(boot_id, []).append(event)
    for boot_id, items in by_boot.items():
        info = HostInfo(host.name, boot_id, host.kernel, host.cpu_model, "demo-backfill")
        for i in range(0, len(items), batch):
            yield Payload(info, None, tuple(items[i : i + batch]))


def backfill_hosts(fleet: Any) -> list[BackfillHost]:
    """The fleet's hosts and workloads as the backfill needs them (agent/simulate.py SimHost)."""
    from agent.fakehost import DEFAULT_CPU_MODEL
    from agent.host import HostRoot
    from agent.payload import Guest
    from agent.sources.guests import GuestResolver

    hosts: list[BackfillHost] = []
    for sim in fleet.hosts:
        fake = sim.fake
        # The agent's own attribution, so a backfilled guest is the same guest (name, uuid,
        # vmm, vCPU) as the live agent reports; the fleet's own facts only if it cannot tell.
        resolver = GuestResolver(HostRoot.at(fake.root))
        resolver.refresh()
        mitigate_file = fake.root / "proc/sys/kernel/split_lock_mitigate"
        mitigate = int(mitigate_file.read_text().strip()) if mitigate_file.is_file() else None
        workloads: list[BackfillWorkload] = []
        for work in sim.workloads:
            if work.doomed:
                continue
            threads: list[BackfillThread] = []
            for index, (tid, comm) in enumerate(zip(work.tids, work.comms, strict=True)):
                tgid, guest = resolver.resolve(tid, comm)
                if work.vmm_kind is not None and guest is None:
                    guest = Guest(
                        name=work.name,
                        uuid=work.vm.uuid if work.vm is not None else work.uuid,
                        vmm=_VMM_NAMES.get(work.vmm_kind, str(work.vmm_kind)),
                        vcpu=index,
                    )
                threads.append(BackfillThread(comm, tid, tgid or work.pid, guest))
            workloads.append(
                BackfillWorkload(
                    work.name, work.is_guest, work.bus_locks, work.rate, work.burst_p, tuple(threads)
                )
            )
        hosts.append(
            BackfillHost(
                name=sim.name,
                kernel=sim.kernel,
                cpu_model=DEFAULT_CPU_MODEL,
                mode=sim.mode,
                mitigate=mitigate,
                boot_id=fake.boot_id,
                booted_at=datetime.fromtimestamp(fake.btime or 0, UTC),
                workloads=tuple(workloads),
            )
        )
    return hosts


# --------------------------------------------------------------------------- the run


@dataclass
class _Agent:
    host: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    reported_exit: bool = False


@dataclass
class Demo:
    options: DemoOptions
    say: Callable[[str], None]
    stop: threading.Event = field(default_factory=threading.Event)
    _socket: socket.socket | None = None
    _server: Any = None
    _server_thread: threading.Thread | None = None
    _agents: list[_Agent] = field(default_factory=list)
    _log_handler: logging.Handler | None = None
    _fleet: Any = None
    _lock_fd: int | None = None
    _step: int = 0

    # -- helpers ----------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        return self.options.dir.resolve()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.options.port}"

    def announce(self, text: str) -> None:
        self._step += 1
        self.say(f"[{self._step}/{STEPS}] {text}")
        if self.stop.is_set():
            raise _Stopped

    def _checkpoint(self) -> None:
        if self.stop.is_set():
            raise _Stopped

    def database_url(self) -> str:
        return self.options.database_url or f"sqlite:///{self.dir / 'splitwatch.db'}"

    # -- entry point ------------------------------------------------------------------------

    def run(self) -> int:
        self.options.check()
        self._bind()
        # SIGINT/SIGTERM only set `stop` (agent/stop_signals.py: without a lock in the handler):
        # the main thread notices it between steps and in the tick loop, so a second Ctrl-C
        # during shutdown cannot interrupt the cleanup halfway.
        with stop_on_signals(self.stop):
            return self._run()

    def _run(self) -> int:
        try:
            try:
                self._setup()
            except _Stopped:
                pass
            else:
                self._loop()
            return 0
        finally:
            # Nothing to announce when the demo failed before its first step (e.g. its
            # directory is in use): only the error sentence is printed then.
            announced = self._step > 0
            if announced:
                self.say("stopping: agents, simulator, backend ...")
            self._shutdown()
            if announced:
                self.say("stopped")

    # -- setup ------------------------------------------------------------------------------

    def _bind(self) -> None:
        # Bound before anything is reset: a port in use must leave the previous run intact.
        # The same socket is handed to uvicorn, so nobody can take the port in between.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(("127.0.0.1", self.options.port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise DemoError(
                    f"port {self.options.port} on 127.0.0.1 is already in use (another demo or "
                    "server?): stop it, or choose a free port with --port"
                ) from None
            if exc.errno == errno.EACCES:
                raise DemoError(
                    f"port {self.options.port} on 127.0.0.1 needs privileges to bind: "
                    "choose a port above 1023 with --port"
                ) from None
            raise DemoError(
                f"cannot listen on 127.0.0.1:{self.options.port} ({exc.strerror}): choose another --port"
            ) from None
        sock.listen(128)
        sock.set_inheritable(False)
        self._socket = sock

    def _setup(self) -> None:
        self._prepare_dir()
        revision = self._upgrade()
        self.announce(f"database {self._safe_url()} upgraded to revision {revision}")
        fleet = self._build_fleet()
        tokens = self._create_tokens(fleet)
        self._start_server()
        self.announce(f"backend listening on {self.url} (JSON log: {self.dir / 'logs/server.log'})")
        self._backfill(fleet, tokens)
        self._start_agents(fleet, tokens)
        waited = self._await_first_reports(tokens["viewer"])
        self.announce(
            f"{len(self._agents)} agents started: real `splitwatch agent` processes, one per host, "
            f"sending every {self.options.agent_interval_s:g} s; {waited} "
            f"(logs: {self.dir / 'logs/agents'})"
        )
        self._fleet = fleet
        viewer = tokens["viewer"]
        # A credential: readable by its owner only, like the database next to it should be.
        fd = os.open(self.dir / "viewer-token", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(viewer + "\n")
        bar = "=" * 78
        self.say(bar)
        self.say(f"  Dashboard:     {self.url}/")
        self.say(f"  Viewer token:  {viewer}")
        self.say(f"                 (paste it on the login page; also in {self.dir / 'viewer-token'})")
        self.say("  What to look at: docs/demo.md.  Ctrl-C stops the demo.")
        self.say(bar)

    def _prepare_dir(self) -> None:
        d = self.dir
        if d.exists() and not d.is_dir():
            raise DemoError(f"--dir {d} is a file, not a directory: choose another --dir")
        reset = d.exists() and any(d.iterdir())
        if reset and not (d / MARKER).is_file():
            raise DemoError(
                f"--dir {d} is not empty and is not a splitwatch demo directory (no {MARKER} "
                "file): choose an empty or new directory with --dir, the demo resets it on every run"
            )
        d.mkdir(parents=True, exist_ok=True)
        self._lock(d / MARKER)
        if reset:
            for name in ("hosts", "agents", "logs"):
                shutil.rmtree(d / name, ignore_errors=True)
            if self.options.database_url is None:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    (d / f"splitwatch.db{suffix}").unlink(missing_ok=True)
            (d / "viewer-token").unlink(missing_ok=True)
        for sub in ("hosts", "agents", "logs/agents"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self._log_to_file(d / "logs/server.log")
        db = (
            "the previous run's SQLite database, fake hosts, spools and logs removed"
            if self.options.database_url is None
            else "the previous run's fake hosts, spools and logs removed; the database "
            "(SPLITWATCH_DATABASE_URL) is reused"
        )
        self.announce(f"demo directory {d}: " + (f"reset ({db})" if reset else "created"))

    def _lock(self, marker: Path) -> None:
        # Held until the process ends: a second demo on the same directory would otherwise
        # delete the hosts and database under the running one.
        import fcntl

        fd = os.open(marker, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DemoError(
                f"another splitwatch demo is running in {marker.parent}: stop it (Ctrl-C), or give "
                "this one its own --dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"splitwatch demo directory, reset on every run; pid {os.getpid()}\n".encode())
        self._lock_fd = fd

    def _log_to_file(self, path: Path) -> None:
        from app.logging import JsonFormatter

        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        for name in ("uvicorn", "uvicorn.error"):
            lg = logging.getLogger(name)
            lg.handlers[:] = []
            lg.propagate = True
        logging.getLogger("uvicorn.access").disabled = True
        # One line per backfill request would drown the server's own lines.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._log_handler = handler

    def _safe_url(self) -> str:
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.database_url()).render_as_string(hide_password=True)
        except Exception:  # an unparsable URL is reported by make_engine with its remedy
            return "(unparsable URL)"

    def _engine(self) -> Any:
        from app.store.engine import DatabaseUrlError, make_engine

        try:
            return make_engine(self.database_url())
        except DatabaseUrlError as exc:
            raise DemoError(str(exc)) from None

    def _upgrade(self) -> str:
        from sqlalchemy.exc import SQLAlchemyError

        from app.store.schema_check import head_revision, migrate

        engine = self._engine()
        try:
            migrate(engine)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise DemoError(
                f"database {self._safe_url()} could not be upgraded ({reason}): check "
                "SPLITWATCH_DATABASE_URL, that the server runs and that the user may create tables"
            ) from None
        finally:
            engine.dispose()
        return head_revision()

    def _build_fleet(self) -> Any:
        from agent.simulate import Fleet, FleetError

        fleet = Fleet(
            self.dir / "hosts",
            hosts=self.options.hosts,
            seed=self.options.seed,
            tick_s=self.options.tick_s,
            tracefs=True,
            live=True,
        )
        try:
            fleet.build()
        except (FleetError, OSError) as exc:
            raise DemoError(f"cannot lay out the fleet under {self.dir / 'hosts'} ({exc})") from None
        guests = sum(1 for h in fleet.hosts for w in h.workloads if w.is_guest)
        self.announce(
            f"fleet: {len(fleet.hosts)} simulated hosts with {guests} guests under "
            f"{self.dir / 'hosts'} ({self._roles(fleet)})"
        )
        return fleet

    @staticmethod
    def _roles(fleet: Any) -> str:
        notes: list[str] = []
        for h in fleet.hosts:
            if h.role == "noisy":
                noisy = max(h.workloads, key=lambda w: w.rate)
                notes.append(f"noisy guest {noisy.name} on {h.name}")
            elif h.role == "fatal":
                notes.append(f"{h.name} in fatal mode kills two guests")
            elif h.role == "drift":
                notes.append(f"detection drifts off on {h.name}")
            elif h.role in ("foreign", "inconsistent", "unsupported"):
                notes.append(f"{h.name} {h.role}")
            elif h.kernel.startswith("5."):
                notes.append(f"{h.name} on {h.kernel}")
        return "; ".join(notes) or "generic libvirt hosts"

    def _create_tokens(self, fleet: Any) -> dict[str, str]:
        from sqlalchemy.exc import SQLAlchemyError

        from app.store.tokens import create_token

        engine = self._engine()
        tokens: dict[str, str] = {}
        try:
            with engine.begin() as conn:
                tokens["viewer"], _ = create_token(conn, "viewer", label="splitwatch demo: dashboard")
                for h in fleet.hosts:
                    tokens[h.name], _ = create_token(
                        conn, "agent", host_name=h.name, label=f"splitwatch demo: agent of {h.name}"
                    )
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise DemoError(f"cannot create tokens in {self._safe_url()} ({reason})") from None
        finally:
            engine.dispose()
        self.announce(
            f"tokens: 1 viewer, {len(fleet.hosts)} agent (one per host; an agent token writes only its host)"
        )
        return tokens

    def _start_server(self) -> None:
        import uvicorn

        from app.main import create_app
        from app.settings import Settings

        settings = Settings(
            database_url=self.database_url(), host="127.0.0.1", port=self.options.port, log_level="info"
        )
        from app.server import uvicorn_options

        app = create_app(settings)
        config = uvicorn.Config(
            app,
            **uvicorn_options(settings),
            log_config=None,  # ours: JSON lines into DIR/logs/server.log
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        assert self._socket is not None
        sockets = [self._socket]
        thread = threading.Thread(target=lambda: server.run(sockets=sockets), name="uvicorn", daemon=True)
        self._server, self._server_thread = server, thread
        thread.start()
        deadline = time.monotonic() + SERVER_START_S
        while not server.started:
            if not thread.is_alive():
                raise DemoError(
                    f"the backend exited during startup: see {self.dir / 'logs/server.log'} for why"
                )
            if time.monotonic() > deadline:
                raise DemoError(f"the backend did not start within {SERVER_START_S:g} s: see the log")
            self._checkpoint()
            time.sleep(0.05)

    def _backfill(self, fleet: Any, tokens: dict[str, str]) -> None:
        import httpx

        hosts = backfill_hosts(fleet)
        if self.options.backfill_hours <= 0:
            self.announce("backfill: none asked for (the dashboard starts empty)")
            return
        if self._known_hosts({h.name for h in hosts}):
            self.announce(
                "backfill: skipped, the reused database already holds these hosts' history "
                "(an earlier demo run)"
            )
            return
        start, end = backfill_window(datetime.now(UTC), self.options.backfill_hours)
        total = 0
        with httpx.Client(base_url=self.url, timeout=60.0) as client:
            for host in hosts:
                for payload in backfill_payloads(host, start=start, end=end, seed=self.options.seed):
                    self._checkpoint()
                    response = client.post(
                        "/api/v1/ingest",
                        content=payload.to_json(),
                        headers={
                            "Authorization": f"Bearer {tokens[host.name]}",
                            "Content-Type": "application/json",
                        },
                    )
                    if response.status_code // 100 != 2:
                        raise DemoError(
                            f"backfill of {host.name} refused by {self.url}/api/v1/ingest "
                            f"({response.status_code}: {response.text[:300]}): see "
                            f"{self.dir / 'logs/server.log'}"
                        )
                    total += sum(e.count for e in payload.events)
        hours = f"{self.options.backfill_hours:g} h"
        self.announce(
            f"backfill: {total} synthetic traps over the last {hours} on {len(hosts)} hosts, sent as "
            "source=import events through POST /api/v1/ingest (live data follows, from the agents)"
        )

    def _known_hosts(self, names: set[str]) -> bool:
        if self.options.database_url is None:
            return False  # our own SQLite file was just reset
        from sqlalchemy import select

        from app.store.tables import host

        engine = self._engine()
        try:
            with engine.connect() as conn:
                return (
                    conn.execute(select(host.c.id).where(host.c.name.in_(names)).limit(1)).first() is not None
                )
        finally:
            engine.dispose()

    def _start_agents(self, fleet: Any, tokens: dict[str, str]) -> None:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        for h in fleet.hosts:
            state = self.dir / "agents" / h.name
            argv = [
                sys.executable,
                "-m",
                "app.cli.main",
                "agent",
                "--server",
                self.url,
                "--root",
                str(h.root),
                "--interval",
                f"{self.options.agent_interval_s:g}",
                "--spool",
                str(state / "spool"),
                "--state-dir",
                str(state / "state"),
            ]
            # The token travels in the environment, never in an argv that `ps` shows.
            agent_env = {**env, "SPLITWATCH_AGENT_TOKEN": tokens[h.name]}
            agent = _Agent(h.name, argv, self.dir / "logs/agents" / f"{h.name}.log")
            agent.log_file = open(agent.log_path, "ab")  # noqa: SIM115 - closed in _shutdown
            # Same process group: a Ctrl-C in the terminal reaches the agents too, and they
            # stop on it by themselves; a demo killed with -9 leaves nothing behind in a shell.
            agent.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=agent.log_file,
                stderr=subprocess.STDOUT,
                env=agent_env,
                close_fds=True,
            )
            self._agents.append(agent)
            self._checkpoint()

    def _await_first_reports(self, viewer: str) -> str:
        """Wait until every agent has sent its first host state, before the fleet moves.

        An agent learns a host's VMM processes on its first pass; a guest killed before that
        (the fatal host's, seconds into the run) could not be attributed, as on a real host
        whose agent started after the guest died. So the simulator starts only once every
        agent has looked.
        """
        import httpx

        expected = {a.host for a in self._agents}
        deadline = time.monotonic() + FIRST_REPORT_S
        reporting: set[str] = set()
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while time.monotonic() < deadline:
                self._checkpoint()
                try:
                    response = client.get("/api/v1/hosts", headers={"Authorization": f"Bearer {viewer}"})
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 200:
                    reporting = {
                        h["name"] for h in response.json().get("items", []) if h.get("mode") is not None
                    }
                if expected <= reporting:
                    return "every one has reported"
                dead = [
                    a.host for a in self._agents if a.process is not None and a.process.poll() is not None
                ]
                if dead and expected - reporting <= set(dead):
                    break
                time.sleep(0.25)
        missing = ", ".join(sorted(expected - reporting))
        return f"not reporting yet: {missing} (see their logs)"

    # -- running ----------------------------------------------------------------------------

    def _loop(self) -> None:
        fleet = self._fleet
        next_tick = time.monotonic() + self.options.tick_s
        while not self.stop.wait(max(0.0, next_tick - time.monotonic())):
            next_tick += self.options.tick_s
            try:
                fleet.tick()
            except OSError as exc:
                self.say(f"simulator: cannot write the fake hosts ({exc}): stopping")
                return
            self._watch_agents()
            if self._server_thread is not None and not self._server_thread.is_alive():
                self.say(f"the backend stopped unexpectedly: see {self.dir / 'logs/server.log'}; stopping")
                return

    def _watch_agents(self) -> None:
        for agent in self._agents:
            if agent.process is None or agent.reported_exit:
                continue
            code = agent.process.poll()
            if code is not None:
                agent.reported_exit = True
                self.say(f"agent of {agent.host} exited with code {code}: see {agent.log_path}")

    # -- shutdown ---------------------------------------------------------------------------

    def _shutdown(self) -> None:
        running = [a for a in self._agents if a.process is not None and a.process.poll() is None]
        for agent in running:
            assert agent.process is not None
            agent.process.send_signal(signal.SIGTERM)  # a no-op for one that already exited
        deadline = time.monotonic() + AGENT_STOP_S
        for agent in running:
            assert agent.process is not None
            try:
                agent.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                agent.process.kill()
                agent.process.wait()
                self.say(f"agent of {agent.host} did not stop within {AGENT_STOP_S:g} s: killed")
        for agent in self._agents:
            if agent.log_file is not None:
                agent.log_file.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._server_thread is not None:
            self._server_thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the directory for the next run


def run(options: DemoOptions, say: Callable[[str], None]) -> int:
    """Run the demo until SIGINT/SIGTERM; 0 after a clean stop. DemoError for expected failures."""
    return Demo(options, say).run()
