"""Arrange data the way production does: payloads built from agent.payload, POSTed to ingest.

    fill = Filler(server.url, tokens)            # tokens: the tests/app/conftest.py fixture
    fill.send("h1", state=state(T0, mode="warn"), events=[ev(T0, guest="vm1", count=3)])
    fill.send("h2", events=[ev(T0 + 60 * SECOND, action="sigbus", guest="vm2")], gaps=[lost(5)])

Every row a read test sees went through the real HTTP ingest path (schema, auth, rows, the
rollups written at ingest), so the read API is tested against what ingest really stores.
`ev()` without `seq` gets the next one for its (host, boot_id, source), so a test only writes
what it is about. `send()` returns the ingest answer and fails loudly on anything but 2xx.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

import httpx

from agent.payload import (
    Action,
    CpuState,
    Event,
    Gap,
    GapReason,
    Guest,
    HostInfo,
    HostState,
    Kind,
    Mode,
    Payload,
    Source,
)

SECOND = dt.timedelta(seconds=1)
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
# A fixed, whole-hour instant: bucket edges in tests are then easy to reason about.
T0 = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
DEFAULT_KERNEL = "6.8.0-51-generic"

_NO_SEQ = -1


class TokenMaker(Protocol):
    def agent(self, host: str = ...) -> str: ...


def ev(
    time: dt.datetime,
    *,
    guest: str | None = None,
    action: str = "warn",
    kind: str = "split_lock",
    source: str = "kmsg",
    count: int = 1,
    comm: str | None = None,
    tid: int = 4242,
    tgid: int | None = 4200,
    address: str | None = "0x401a2b",
    seq: int | None = None,
    vcpu: int | None = 0,
    vmm: str = "qemu",
    uuid: str | None = None,
) -> Event:
    """One event; with `guest`, taken by that guest's vCPU thread."""
    return Event(
        source=Source(source),
        seq=_NO_SEQ if seq is None else seq,
        time=time,
        kind=Kind(kind),
        comm=comm if comm is not None else ("CPU 0/KVM" if guest else "gcc"),
        tid=tid,
        tgid=tgid,
        address=address,
        count=count,
        action=Action(action),
        guest=Guest(name=guest, uuid=uuid, vmm=vmm, vcpu=vcpu) if guest else None,
    )


def state(
    observed_at: dt.datetime,
    *,
    mode: str = "warn",
    cpus: int = 4,
    off: Iterable[int] = (),
    errors: Iterable[int] = (),
    mitigate: Literal[0, 1] | None = 1,
    ratelimit: int | None = None,
    sld_supported: bool = True,
    bld_supported: bool = True,
    verdict: str | None = "consistent",
    reason: str = "split-lock detection is on on every CPU",
    details: dict[str, object] | None = None,
) -> HostState:
    """A host state: `cpus` CPUs with detection on, except those in `off` (read off) and `errors`,
    with the agent's consistency verdict (None: an agent that sends none)."""
    off_set, error_set = set(off), set(errors)
    on = mode in ("warn", "fatal")
    cpu_states = []
    for cpu in range(cpus):
        if cpu in error_set:
            cpu_states.append(CpuState(cpu, None, None, None, "EIO reading MSR 0x33"))
        else:
            sld_on = on and cpu not in off_set
            cpu_states.append(CpuState(cpu, (1 << 29) if sld_on else 0, sld_on, bld_supported, None))
    return HostState(
        observed_at=observed_at,
        mode=Mode(mode),
        ratelimit=ratelimit,
        mitigate=mitigate,
        sld_supported=sld_supported,
        bld_supported=bld_supported,
        cpus=tuple(cpu_states),
        consistency=(
            {"verdict": verdict, "reason": reason, "details": details or {}} if verdict is not None else None
        ),
    )


def lost(
    count: int,
    *,
    reason: str = "overrun",
    source: str = "kmsg",
    first_seq: int = 1000,
    last_seq: int | None = None,
) -> Gap:
    return Gap(
        source=Source(source),
        first_seq=first_seq,
        last_seq=first_seq + count - 1 if last_seq is None else last_seq,
        count=count,
        reason=GapReason(reason),
    )


class Filler:
    """Sends payloads for any number of hosts through POST /api/v1/ingest."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenMaker,
        *,
        boot_id: str = "boot-1",
        kernels: dict[str, str] | None = None,
    ) -> None:
        self._client = httpx.Client(base_url=base_url, timeout=60)
        # Kernel release per host name (default DEFAULT_KERNEL); send(kernel=) overrides it.
        self.kernels = dict(kernels or {})
        self._tokens = tokens
        self._agent_tokens: dict[str, str] = {}
        self._next_seq: dict[tuple[str, str, str], int] = defaultdict(lambda: 1)
        self.boot_id = boot_id

    def close(self) -> None:
        self._client.close()

    def host_info(self, name: str, *, boot_id: str | None = None, kernel: str | None = None) -> HostInfo:
        return HostInfo(
            name=name,
            boot_id=boot_id or self.boot_id,
            kernel=kernel or self.kernels.get(name, DEFAULT_KERNEL),
            cpu_model="Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
            agent_version="0.1.0",
        )

    def payload(
        self,
        host: str,
        *,
        state: HostState | None = None,
        events: Sequence[Event] = (),
        gaps: Sequence[Gap] = (),
        boot_id: str | None = None,
        health: dict[str, Any] | None = None,
        kernel: str | None = None,
    ) -> Payload:
        info = self.host_info(host, boot_id=boot_id, kernel=kernel)
        numbered = []
        for event in events:
            if event.seq == _NO_SEQ:
                key = (host, info.boot_id, str(event.source))
                event = dataclasses.replace(event, seq=self._next_seq[key])
                self._next_seq[key] += 1
            numbered.append(event)
        return Payload(host=info, state=state, events=tuple(numbered), gaps=tuple(gaps), health=health)

    def post(self, payload: Payload) -> httpx.Response:
        name = payload.host.name
        if name not in self._agent_tokens:
            self._agent_tokens[name] = self._tokens.agent(name)
        return self._client.post(
            "/api/v1/ingest",
            content=payload.to_json(),
            headers={
                "Authorization": f"Bearer {self._agent_tokens[name]}",
                "Content-Type": "application/json",
            },
        )

    def send(
        self,
        host: str,
        *,
        state: HostState | None = None,
        events: Sequence[Event] = (),
        gaps: Sequence[Gap] = (),
        boot_id: str | None = None,
        health: dict[str, Any] | None = None,
        kernel: str | None = None,
    ) -> dict[str, Any]:
        """One batch for `host`; the ingest answer ({"accepted", "duplicates"})."""
        response = self.post(
            self.payload(
                host, state=state, events=events, gaps=gaps, boot_id=boot_id, health=health, kernel=kernel
            )
        )
        assert response.status_code < 300, (
            f"ingest refused the arranged batch: {response.status_code} {response.text}"
        )
        answer: dict[str, Any] = response.json()
        return answer
