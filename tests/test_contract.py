"""The agent's payload (agent/payload.py) is what the backend's schema (app/ingest/schema.py)
accepts: one payload covering every field, through to_json(), validated strictly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest

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
from app.ingest.schema import (
    ActionName,
    GapReasonName,
    KindName,
    ModeName,
    PayloadIn,
    SourceName,
    parse_payload,
)

AT = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)


def full_payload() -> Payload:
    return Payload(
        host=HostInfo(
            "kvm-17", "0f0e0d0c-1111-2222-3333-444455556666", "6.8.0-45-generic", "Intel Xeon", "0.1.0"
        ),
        state=HostState(
            observed_at=AT,
            mode=Mode.RATELIMIT,
            ratelimit=10,
            mitigate=1,
            sld_supported=True,
            bld_supported=True,
            cpus=(
                CpuState(0, 1 << 29, True, True),
                CpuState(1, 0, False, False),
                CpuState(2, None, None, None, "cpu 2: cannot read dev/cpu/2/msr (EIO)"),
            ),
        ),
        events=tuple(
            Event(
                source=source,
                seq=i,
                time=AT + timedelta(seconds=i),
                kind=kind,
                comm="CPU 0/KVM",
                tid=5677,
                tgid=5600,
                address="0xffffffff81000000",
                count=3,
                action=action,
                guest=Guest("web-01", "6c9f0c3e-7a44-4a43-9a07-9d1f1c7e2b11", "qemu", 0) if i % 2 else None,
            )
            for i, (source, kind, action) in enumerate(
                (s, k, a) for s in Source for k in Kind for a in Action
            )
        ),
        gaps=tuple(Gap(Source.KMSG, 10 * i, 10 * i + 4, 5, reason) for i, reason in enumerate(GapReason)),
        health={"spool_bytes": 1024, "last_error": None},
    )


def test_agent_payload_covering_every_field_validates_with_the_backend_schema() -> None:
    sent = full_payload()
    parsed = parse_payload(sent.to_json().encode())
    assert parsed.host.name == "kvm-17"
    assert parsed.state is not None and parsed.state.ratelimit == 10
    assert [c.error for c in parsed.state.cpus][2] == "cpu 2: cannot read dev/cpu/2/msr (EIO)"
    assert len(parsed.events) == len(Source) * len(Kind) * len(Action)
    guest = parsed.events[1]["guest"]
    assert guest is not None and guest["uuid"] is not None
    assert parsed.events[0]["time"] == AT  # microseconds and the zone survive
    assert {g.reason for g in parsed.gaps} == {str(r) for r in GapReason}
    assert parsed.health == {"spool_bytes": 1024, "last_error": None}


def test_payload_without_state_and_without_health_validates() -> None:
    sent = Payload(host=full_payload().host, state=None)
    parsed = parse_payload(sent.to_json().encode())
    assert parsed.state is None and parsed.events == [] and parsed.health is None


@pytest.mark.parametrize(
    ("literal", "enum"),
    [
        (SourceName, Source),
        (KindName, Kind),
        (ActionName, Action),
        (ModeName, Mode),
        (GapReasonName, GapReason),
    ],
)
def test_schema_enums_are_exactly_the_agents_contract_words(literal: object, enum: type) -> None:
    assert set(get_args(literal)) == {str(m) for m in enum}


def test_every_key_the_agent_writes_is_a_field_of_the_schema() -> None:
    body = json.loads(full_payload().to_json())
    fields = {f.alias or name for name, f in PayloadIn.model_fields.items()}
    assert set(body) == fields
