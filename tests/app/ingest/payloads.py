"""Payload builders for ingest tests: agent.payload dataclasses, as the agent sends them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

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

T0 = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)


def host_info(name: str = "host-1", boot_id: str = "boot-1", kernel: str = "6.8.0") -> HostInfo:
    return HostInfo(name=name, boot_id=boot_id, kernel=kernel, cpu_model="Intel Xeon", agent_version="0.1.0")


def state(
    at: datetime = T0,
    mode: Mode = Mode.WARN,
    sld_on: Sequence[bool | None] = (True, True, True, True),
    mitigate: int | None = 1,
    sld_supported: bool = True,
    errors: dict[int, str] | None = None,
    verdict: str | None = None,
    reason: str = "the agent's words",
    details: dict[str, object] | None = None,
) -> HostState:
    """A state sample; `verdict`: the agent's consistency verdict (None: an agent that sends none)."""
    errors = errors or {}
    return HostState(
        observed_at=at,
        mode=mode,
        ratelimit=None,
        mitigate=mitigate,  # type: ignore[arg-type]
        sld_supported=sld_supported,
        bld_supported=True,
        cpus=tuple(
            CpuState(
                cpu=i,
                test_ctrl=None if i in errors else (1 << 29 if on else 0),
                sld_on=None if i in errors else on,
                bld_on=None if i in errors else True,
                error=errors.get(i),
            )
            for i, on in enumerate(sld_on)
        ),
        consistency=(
            {"verdict": verdict, "reason": reason, "details": details or {}} if verdict is not None else None
        ),
    )


def event(
    seq: int,
    at: datetime = T0,
    guest: str | None = "vm-1",
    action: Action = Action.WARN,
    kind: Kind = Kind.SPLIT_LOCK,
    count: int = 1,
    source: Source = Source.KMSG,
    address: str | None = "0x7f0000001000",
) -> Event:
    return Event(
        source=source,
        seq=seq,
        time=at,
        kind=kind,
        comm="CPU 0/KVM" if guest else "stress-ng",
        tid=4000 + seq % 10,
        tgid=3999,
        address=address,
        count=count,
        action=action,
        guest=Guest(name=guest, uuid=f"uuid-{guest}", vmm="qemu", vcpu=0) if guest else None,
    )


def events(
    first_seq: int, n: int, at: datetime = T0, step: timedelta = timedelta(seconds=7)
) -> tuple[Event, ...]:
    return tuple(
        event(first_seq + i, at + i * step, guest=f"vm-{i % 3}" if i % 2 else None) for i in range(n)
    )


def payload(
    evs: Sequence[Event] = (),
    st: HostState | None = None,
    gaps: Sequence[Gap] = (),
    host: HostInfo | None = None,
) -> Payload:
    return Payload(host=host or host_info(), state=st, events=tuple(evs), gaps=tuple(gaps))


def gap(first: int, last: int, reason: GapReason = GapReason.OVERRUN) -> Gap:
    return Gap(source=Source.KMSG, first_seq=first, last_seq=last, count=last - first + 1, reason=reason)
