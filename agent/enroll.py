"""Fleet enrollment, the agent's side (#15): trade the fleet's enrollment token for this host's own
agent token, once, and keep it.

    token_path(state_dir)        STATE_DIR/agent-token: the agent token, one line, mode 0600
    read_identity(host)          hostname, boot_id and machine id, read under --root
    request_agent_token(...)     one POST /api/v1/enroll -> Enrolled | EnrollRefused | EnrollUnavailable
    obtain_token(...)            the stored token if there is one; else enroll (retrying while the
                                 backend is unreachable or refuses), store it, return it

Standard library only, Python 3.9+ (http.client; TLS verified against the system's CA store,
SSL_CERT_FILE, or --ca-file's private CA, with hostname checking), no redirects followed (a
token is never sent anywhere but --server). The enrollment token is read from its file at each attempt, so an
admin who replaces an expired or exhausted one does not need to restart the agent.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import logging
import os
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Union
from urllib.parse import urlsplit

import agent
from agent.errors import ConfigError, SplitwatchAgentError
from agent.host import HostRoot
from agent.transport import tls_context

log = logging.getLogger("splitwatch.agent.enroll")

TOKEN_FILE = "agent-token"
MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")
RETRY_BASE_S = 2.0
RETRY_CAP_S = 60.0
REFUSED_RETRY_S = 300.0


class EnrollError(SplitwatchAgentError):
    """Enrollment did not give this host a token; the message says why and what to do."""


@dataclass(frozen=True)
class Identity:
    host: str
    boot_id: str
    machine_id: str | None  # None: no etc/machine-id, or not yet initialised


@dataclass(frozen=True)
class Enrolled:
    token: str
    token_id: int
    host: str
    replaced: tuple[int, ...]


@dataclass(frozen=True)
class EnrollRefused:
    """The backend answered 4xx: a human must act (the message says what)."""

    status: int
    reason: str


@dataclass(frozen=True)
class EnrollUnavailable:
    """No answer, or 5xx/429: try again later."""

    reason: str


# Union, not |: a runtime alias, and the agent runs on Python 3.9.
Outcome = Union[Enrolled, EnrollRefused, EnrollUnavailable]


def token_path(state_dir: Path) -> Path:
    return Path(state_dir) / TOKEN_FILE


def read_identity(host: HostRoot) -> Identity:
    """Who this host is, from under --root (never this machine's own uname)."""
    try:
        name = host.read_text("proc/sys/kernel/hostname").strip()
        boot_id = host.read_text("proc/sys/kernel/random/boot_id").strip()
    except OSError as exc:
        raise EnrollError(
            f"cannot read the host's identity under {host.root} ({exc.strerror or exc}): "
            "pass the host's root with --root"
        ) from None
    if not name or not boot_id:
        raise EnrollError(
            f"hostname or boot_id under {host.root}/proc is empty: set the hostname before enrolling"
        )
    try:
        machine_id: str | None = host.read_text("etc/machine-id").strip()
    except OSError:
        machine_id = None  # containers and minimal images may have none: enrollment still works
    if machine_id is not None and not MACHINE_ID.match(machine_id):
        machine_id = None  # systemd 247+ writes "uninitialized" until the first boot completes
    return Identity(name, boot_id, machine_id)


def read_enroll_token(path: Path) -> str:
    try:
        raw = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the enrollment token file {path} ({exc.strerror or exc}): pass the file an "
            "admin filled with `splitwatch token create --role enroll` (readable by the agent only)"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"enrollment token file {path} is not text: it should hold the token alone"
        ) from None
    if not raw:
        raise ConfigError(f"enrollment token file {path} is empty: put the enrollment token in it")
    return raw


def _message(status: int, body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip().replace("\n", " ")
        return text[:300] or f"HTTP {status}"
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return f"HTTP {status}"


def request_agent_token(
    server: str,
    enroll_token: str,
    identity: Identity,
    *,
    timeout_s: float = 10.0,
    ca_file: Path | None = None,
) -> Outcome:
    """One POST /api/v1/enroll; never raises for network or HTTP trouble."""
    url = urlsplit(server)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"server {server!r} is not an http(s) URL: pass --server https://splitwatch:8000")
    path = url.path.rstrip("/") + "/api/v1/enroll"
    conn: http.client.HTTPConnection | http.client.HTTPSConnection
    if url.scheme == "https":
        # The same verification as the ingest transport: --ca-file's private CA when given.
        conn = http.client.HTTPSConnection(
            url.hostname, url.port, timeout=timeout_s, context=tls_context(ca_file)
        )
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout_s)
    body = json.dumps(
        {"host": identity.host, "boot_id": identity.boot_id, "machine_id": identity.machine_id}
    ).encode()
    headers = {
        "Authorization": f"Bearer {enroll_token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"splitwatch-agent/{agent.__version__}",
    }
    where = f"{url.scheme}://{url.netloc}{path}"
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        status, answer = response.status, response.read(1024 * 1024)
    except ssl.SSLError as exc:
        return EnrollUnavailable(
            f"TLS with {where} failed ({exc.reason or exc}): check the certificate, or pass --ca-file "
            "(or point SSL_CERT_FILE) at the CA that signed it"
        )
    except (OSError, http.client.HTTPException) as exc:
        return EnrollUnavailable(f"cannot reach {where} ({type(exc).__name__}: {exc})")
    finally:
        conn.close()
    if status == 201 or status == 200:
        try:
            data = json.loads(answer)
            replaced = tuple(int(i) for i in data.get("replaced") or ())
            return Enrolled(str(data["token"]), int(data["id"]), str(data["host"]), replaced)
        except (ValueError, KeyError, TypeError):
            return EnrollUnavailable(
                f"{where} answered {status} without a token: is --server a splitwatch backend?"
            )
    if status >= 500 or status in (408, 429):
        return EnrollUnavailable(f"{where} answered {status}: {_message(status, answer)}")
    if status in (401, 403, 409, 422):
        return EnrollRefused(status, _message(status, answer))
    return EnrollUnavailable(
        f"{where} answered {status} ({_message(status, answer)}): check --server, it should be the "
        "backend's base URL"
    )


def store_token(path: Path, token: str) -> None:
    """Write the token 0600, atomically (a crash leaves the old file or the new one, never half)."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(str(tmp), str(path))
    dir_fd = os.open(str(path.parent), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_token(path: Path) -> str | None:
    """The stored agent token, or None when this host has not enrolled yet."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the stored agent token {path} ({getattr(exc, 'strerror', None) or exc}): "
            "fix its permissions, or delete it to enroll again"
        ) from None
    if not text:
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o): made it 0600", path, mode)
        try:
            os.chmod(str(path), 0o600)
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise
    return text


def obtain_token(
    *,
    server: str,
    enroll_token_file: Path | None,
    enroll_token: str | None,
    state_dir: Path,
    root: Path,
    once: bool = False,
    stop: threading.Event | None = None,
    timeout_s: float = 10.0,
    sleep: Callable[[float], bool] | None = None,
    ca_file: Path | None = None,
) -> str:
    """This host's agent token: from STATE_DIR/agent-token when it enrolled before, else by
    enrolling now. With `once`, one attempt; else retry (backoff while unreachable, every
    REFUSED_RETRY_S while refused) until it works or `stop` is set."""
    path = token_path(state_dir)
    stored = load_token(path)
    if stored is not None:
        return stored
    if enroll_token_file is None and not enroll_token:
        raise ConfigError("no enrollment token: pass --enroll-token FILE or set SPLITWATCH_ENROLL_TOKEN")
    identity = read_identity(HostRoot(Path(root)))
    stop = stop or threading.Event()
    wait = sleep or stop.wait
    failures = 0
    while True:
        raw = read_enroll_token(enroll_token_file) if enroll_token_file is not None else str(enroll_token)
        outcome = request_agent_token(server, raw, identity, timeout_s=timeout_s, ca_file=ca_file)
        if isinstance(outcome, Enrolled):
            if outcome.host != identity.host:
                raise EnrollError(
                    f"{server} enrolled host {outcome.host!r}, not {identity.host!r}: "
                    "is --server a splitwatch backend?"
                )
            store_token(path, outcome.token)
            log.info(
                "enrolled as host %s (agent token #%d, kept in %s)%s",
                identity.host,
                outcome.token_id,
                path,
                f"; it replaces token(s) {list(outcome.replaced)} of this machine's earlier install"
                if outcome.replaced
                else "",
            )
            return outcome.token
        if isinstance(outcome, EnrollRefused):
            message = f"enrollment of host {identity.host} refused ({outcome.status}): {outcome.reason}"
            if once:
                raise EnrollError(message)
            delay = REFUSED_RETRY_S
            log.error("%s. Trying again in %d s", message, delay)
        else:
            failures += 1
            message = f"cannot enroll host {identity.host} yet: {outcome.reason}"
            if once:
                raise EnrollError(message)
            delay = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** min(failures - 1, 10))
            log.warning("%s. Attempt %d failed, next in %.0f s", message, failures, delay)
        if wait(delay) or stop.is_set():
            raise EnrollError(f"stopped before host {identity.host} was enrolled")
