"""The spool: a durable FIFO that loses nothing silently (agent/spool.py, #4)."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from agent.errors import SpoolError
from agent.payload import Action, Event, Gap, GapReason, HostInfo, Kind, Payload, Source
from agent.spool import HEADER_SIZE, Spool, encode_record

AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def payload(
    seqs: list[int] = (),  # type: ignore[assignment]
    *,
    boot_id: str = "boot-a",
    gaps: tuple[Gap, ...] = (),
    source: Source = Source.KMSG,
) -> bytes:
    host = HostInfo("host-1", boot_id, "6.8.0", "Xeon", "0.1.0")
    events = tuple(
        Event(source, s, AT, Kind.SPLIT_LOCK, "CPU 0/KVM", 100, 99, "0x401136", 1, Action.WARN) for s in seqs
    )
    return Payload(host, None, events, gaps).to_json().encode()


def bodies(spool: Spool) -> list[bytes]:
    return [r.body for r in spool.peek(max_records=10**6, max_bytes=1 << 40)]


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.seg"))


# --------------------------------------------------------------------------- state machine


class SpoolAgainstAList(RuleBasedStateMachine):
    """Whatever the order of appends, acks and restarts, the spool holds exactly what a plain
    list would: every appended record not yet acknowledged, in order, once."""

    def __init__(self) -> None:
        super().__init__()
        self.model: list[tuple[int, bytes]] = []
        self.counter = 0

    @initialize(tmp=st.just(None))
    def open_spool(self, tmp: None) -> None:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name) / "spool"
        self.spool = Spool(self.dir, max_bytes=1 << 40)

    def teardown(self) -> None:
        if hasattr(self, "spool"):
            self.spool.close()
            self._tmp.cleanup()

    @rule(n=st.integers(min_value=0, max_value=4))
    def append(self, n: int) -> None:
        records = []
        for _ in range(n):
            self.counter += 1
            records.append(f"record {self.counter} ".encode() * (self.counter % 7 + 1))
        ids = self.spool.append(records)
        assert len(ids) == n
        self.model.extend(zip(ids, records, strict=True))

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def ack_some_peeked(self, data: st.DataObject) -> None:
        limit = data.draw(st.integers(min_value=1, max_value=len(self.model)))
        peeked = self.spool.peek(max_records=limit, max_bytes=1 << 40)
        assert [(r.id, r.body) for r in peeked] == self.model[:limit]
        chosen = data.draw(st.lists(st.sampled_from([r.id for r in peeked]), unique=True))
        self.spool.ack(chosen)
        self.model = [(i, b) for i, b in self.model if i not in set(chosen)]

    @rule()
    def restart(self) -> None:
        self.spool.close()
        self.spool = Spool(self.dir, max_bytes=1 << 40)

    @rule(max_bytes=st.integers(min_value=1, max_value=200))
    def peek_by_bytes_returns_a_prefix_and_at_least_one(self, max_bytes: int) -> None:
        got = self.spool.peek(max_records=1000, max_bytes=max_bytes)
        assert [(r.id, r.body) for r in got] == self.model[: len(got)]
        if self.model:
            assert len(got) >= 1
            assert len(got) == 1 or sum(len(r.body) for r in got) <= max_bytes

    @invariant()
    def holds_what_the_list_holds(self) -> None:
        if not hasattr(self, "spool"):
            return
        assert [(r.id, r.body) for r in self.spool.peek(10**6, 1 << 40)] == self.model
        assert self.spool.depth == len(self.model)
        assert self.spool.corrupt_records == 0

    @invariant()
    def a_segment_file_exists_only_while_it_has_unacked_records(self) -> None:
        if not hasattr(self, "spool"):
            return
        pending = {i for i, _ in self.model}
        for seg in segments(self.dir):
            first = int(seg.name.split(".")[0])
            # Segments are one per append: a file's records are its first id onwards, until the next file.
            later = [
                int(s.name.split(".")[0]) for s in segments(self.dir) if int(s.name.split(".")[0]) > first
            ]
            upto = min(later) if later else 1 << 62
            assert any(first <= i < upto for i in pending), f"{seg.name} kept with every record acked"


SpoolAgainstAList.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_spool_behaves_like_a_list_across_appends_acks_and_restarts = SpoolAgainstAList.TestCase


class SpoolNeverLosesSilently(RuleBasedStateMachine):
    """With a spool too small for what is appended, every event ever appended is, at any time,
    in exactly one place: waiting, acknowledged, or counted in a spool_full gap covering its seq."""

    def __init__(self) -> None:
        super().__init__()
        self.next_seq = 0
        self.appended: set[int] = set()
        self.acked: set[int] = set()
        self.acked_gaps: list[dict[str, Any]] = []

    @initialize(limit=st.integers(min_value=600, max_value=3000))
    def open_spool(self, limit: int) -> None:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name) / "spool"
        self.limit = limit
        self.spool = Spool(self.dir, max_bytes=limit)

    def teardown(self) -> None:
        if hasattr(self, "spool"):
            self.spool.close()
            self._tmp.cleanup()

    @rule(sizes=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=3))
    def append_a_pass(self, sizes: list[int]) -> None:
        records = []
        for n in sizes:
            seqs = list(range(self.next_seq, self.next_seq + n))
            self.next_seq += n
            self.appended.update(seqs)
            records.append(payload(seqs))
        self.spool.append(records)

    @rule(n=st.integers(min_value=1, max_value=3))
    def backend_takes_the_oldest(self, n: int) -> None:
        taken = self.spool.peek(max_records=n, max_bytes=1 << 30)
        for rec in taken:
            body = json.loads(rec.body)
            self.acked.update(e["seq"] for e in body["events"])
            self.acked_gaps.extend(g for g in body["gaps"] if g["reason"] == "spool_full")
        self.spool.ack([r.id for r in taken])

    @rule()
    def restart(self) -> None:
        self.spool.close()
        self.spool = Spool(self.dir, max_bytes=self.limit)

    @invariant()
    def every_event_is_waiting_acknowledged_or_counted(self) -> None:
        if not hasattr(self, "spool"):
            return
        waiting: set[int] = set()
        gaps = list(self.acked_gaps)
        for rec in self.spool.peek(10**6, 1 << 40):
            body = json.loads(rec.body)
            waiting.update(e["seq"] for e in body["events"])
            gaps.extend(g for g in body["gaps"] if g["reason"] == "spool_full")
        lost = self.appended - waiting - self.acked
        assert not (waiting & self.acked)
        assert sum(g["count"] for g in gaps) == len(lost)
        for seq in lost:
            assert any(g["first_seq"] <= seq <= g["last_seq"] for g in gaps), f"seq {seq} lost silently"
        assert self.spool.size_bytes <= self.limit


SpoolNeverLosesSilently.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_spool_full_never_loses_an_event_silently = SpoolNeverLosesSilently.TestCase


# --------------------------------------------------------------------------- basics


def test_records_survive_a_restart_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 30)
    spool.append([payload([1]), payload([2])])
    spool.append([payload([3])])
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 30)
    assert [json.loads(b)["events"][0]["seq"] for b in bodies(again)] == [1, 2, 3]


def test_acknowledged_records_are_not_given_back_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 30)
    ids = spool.append([payload([1]), payload([2])])
    spool.ack(ids[:1])
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 30)
    assert [r.id for r in again.peek(10, 1 << 30)] == ids[1:]


def test_a_segment_is_deleted_only_when_all_its_records_are_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 30)
    ids = spool.append([payload([1]), payload([2])])
    spool.ack([ids[1]])
    assert len(segments(tmp_path)) == 1
    spool.ack([ids[0]])
    assert segments(tmp_path) == []
    assert spool.size_bytes == 0 and spool.depth == 0


def test_depth_bytes_and_oldest_age_describe_what_waits(tmp_path: Path) -> None:
    now = [1000.0]
    spool = Spool(tmp_path, max_bytes=1 << 30, clock=lambda: now[0])
    assert (spool.depth, spool.size_bytes, spool.oldest_at) == (0, 0, None)
    spool.append([payload([1])])
    now[0] = 1005.0
    spool.append([payload([2])])
    assert spool.depth == 2
    assert spool.size_bytes == sum(p.stat().st_size for p in segments(tmp_path))
    assert spool.oldest_at == 1000.0


def test_a_second_agent_on_the_same_spool_directory_is_refused_with_a_sentence(tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=1 << 30)
    with pytest.raises(SpoolError, match="in use by another splitwatch agent"):
        Spool(tmp_path, max_bytes=1 << 30)
    first.close()
    Spool(tmp_path, max_bytes=1 << 30).close()


def test_an_unwritable_spool_directory_is_a_spool_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError, match=str(blocker)):
        Spool(blocker / "spool", max_bytes=1 << 30)


# --------------------------------------------------------------------------- corruption


def _three_records(d: Path) -> tuple[Path, list[int]]:
    spool = Spool(d, max_bytes=1 << 30)
    ids = spool.append([payload([1]), payload([2]), payload([3])])
    spool.close()
    (seg,) = segments(d)
    return seg, ids


def test_truncated_segment_keeps_the_records_before_the_cut_and_counts_the_torn_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seg, ids = _three_records(tmp_path)
    os.truncate(seg, seg.stat().st_size - 10)
    with caplog.at_level(logging.WARNING):
        spool = Spool(tmp_path, max_bytes=1 << 30)
    assert [r.id for r in spool.peek(10, 1 << 30)] == ids[:2]
    assert spool.corrupt_records == 1
    assert "truncated" in caplog.text
    spool.ack(ids[:2])
    assert segments(tmp_path) == []  # the torn record does not pin the file forever


def test_flipped_byte_in_a_body_skips_that_record_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seg, ids = _three_records(tmp_path)
    data = bytearray(seg.read_bytes())
    second_body = len(encode_record(ids[0], payload([1]), 0.0)) + HEADER_SIZE + 5
    data[second_body] ^= 0x40
    seg.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        spool = Spool(tmp_path, max_bytes=1 << 30)
    assert [r.id for r in spool.peek(10, 1 << 30)] == [ids[0], ids[2]]
    assert spool.corrupt_records == 1
    assert "checksum" in caplog.text


def test_flipped_byte_in_a_header_resyncs_at_the_next_record(tmp_path: Path) -> None:
    seg, ids = _three_records(tmp_path)
    data = bytearray(seg.read_bytes())
    data[8] ^= 0x01  # inside the first record's id
    seg.write_bytes(bytes(data))
    spool = Spool(tmp_path, max_bytes=1 << 30)
    assert [r.id for r in spool.peek(10, 1 << 30)] == ids[1:]
    assert spool.corrupt_records == 1


def test_a_record_that_rots_after_opening_is_skipped_when_peeked_and_the_queue_moves_on(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 30)
    ids = spool.append([payload([1])])
    ids += spool.append([payload([2])])
    first = segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[-3] ^= 0xFF
    first.write_bytes(bytes(data))
    assert [r.id for r in spool.peek(10, 1 << 30)] == ids[1:]
    assert spool.corrupt_records == 1
    assert len(segments(tmp_path)) == 1


def test_garbage_files_in_the_directory_are_left_alone_and_do_not_stop_the_spool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 30)
    ids = spool.append([payload([1])])
    spool.close()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "0000000000000500.seg").write_bytes(os.urandom(300))
    with caplog.at_level(logging.WARNING):
        spool = Spool(tmp_path, max_bytes=1 << 30)
    assert [r.id for r in spool.peek(10, 1 << 30)] == ids
    assert spool.corrupt_records >= 1
    assert "notes.txt" in caplog.text
    assert (tmp_path / "notes.txt").read_text() == "hello"
    new = spool.append([payload([2])])
    assert new[0] > ids[0]
    spool.ack(ids + new)
    assert spool.depth == 0
    assert not (tmp_path / "0000000000000500.seg").exists()  # nothing readable was left in it


def test_crash_between_write_and_rename_leaves_nothing_in_the_queue(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 30)
    ids = spool.append([payload([1])])
    spool.close()
    # What append leaves when the process dies after writing the temporary file.
    (tmp_path / "0000000000000002.seg.tmp").write_bytes(encode_record(2, payload([2]), 0.0))
    again = Spool(tmp_path, max_bytes=1 << 30)
    assert [r.id for r in again.peek(10, 1 << 30)] == ids
    assert not list(tmp_path.glob("*.tmp"))
    assert again.corrupt_records == 0


def test_corrupt_meta_file_means_records_are_sent_again_never_lost(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 30)
    ids = spool.append([payload([1]), payload([2])])
    spool.ack(ids[:1])
    spool.close()
    (tmp_path / "meta.json").write_bytes(b"\x00{not json")
    again = Spool(tmp_path, max_bytes=1 << 30)
    assert [r.id for r in again.peek(10, 1 << 30)] == ids
    assert again.append([payload([3])])[0] > ids[-1]


# --------------------------------------------------------------------------- size limit


def _ledger(spool: Spool) -> list[dict[str, Any]]:
    out = []
    for r in spool.peek(10**6, 1 << 40):
        body = json.loads(r.body)
        if body["state"] is None and not body["events"] and body["gaps"]:
            out.append(body)
    return out


def test_spool_full_drops_the_oldest_payload_and_reports_its_events_as_a_counted_gap(tmp_path: Path) -> None:
    one = len(encode_record(1, payload([10, 11, 12]), 0.0))
    spool = Spool(tmp_path, max_bytes=int(one * 2.5))
    spool.append([payload([10, 11, 12])])
    spool.append([payload([20, 21, 22])])
    spool.append([payload([30, 31, 32])])  # over the limit: the oldest goes
    got = bodies(spool)
    ledger = json.loads(got[0])
    assert ledger["gaps"] == [
        {"source": "kmsg", "first_seq": 10, "last_seq": 12, "count": 3, "reason": "spool_full"}
    ]
    assert ledger["host"]["boot_id"] == "boot-a"
    assert [[e["seq"] for e in json.loads(b)["events"]] for b in got[1:]] == [[20, 21, 22], [30, 31, 32]]
    assert spool.dropped_payloads == 1 and spool.dropped_events == 3
    assert spool.size_bytes <= spool.max_bytes


def test_drop_gaps_survive_a_restart_and_leave_once_acknowledged(tmp_path: Path) -> None:
    one = len(encode_record(1, payload([10]), 0.0))
    spool = Spool(tmp_path, max_bytes=one)
    spool.append([payload([10])])
    spool.append([payload([11])])
    spool.close()
    spool = Spool(tmp_path, max_bytes=one)
    (ledger,) = _ledger(spool)
    assert ledger["gaps"][0]["first_seq"] == 10
    first = spool.peek(1, 1 << 30)[0]
    spool.ack([first.id])
    spool.close()
    assert _ledger(Spool(tmp_path, max_bytes=one)) == []


def test_a_dropped_payloads_own_gaps_are_carried_over_not_lost(tmp_path: Path) -> None:
    overrun = Gap(Source.KMSG, 3, 7, 5, GapReason.OVERRUN)
    one = len(encode_record(1, payload([10], gaps=(overrun,)), 0.0))
    spool = Spool(tmp_path, max_bytes=one)
    spool.append([payload([10], gaps=(overrun,))])
    spool.append([payload([11])])
    (ledger,) = _ledger(spool)
    assert {(g["reason"], g["first_seq"], g["last_seq"], g["count"]) for g in ledger["gaps"]} == {
        ("spool_full", 10, 10, 1),
        ("overrun", 3, 7, 5),
    }


def test_drops_of_two_boots_stay_with_their_own_boot(tmp_path: Path) -> None:
    one = len(encode_record(1, payload([10], boot_id="boot-a"), 0.0))
    spool = Spool(tmp_path, max_bytes=one)
    spool.append([payload([10], boot_id="boot-a")])
    spool.append([payload([1], boot_id="boot-b")])
    spool.append([payload([2], boot_id="boot-b")])
    by_boot = {b["host"]["boot_id"]: b["gaps"] for b in _ledger(spool)}
    assert by_boot == {
        "boot-a": [{"source": "kmsg", "first_seq": 10, "last_seq": 10, "count": 1, "reason": "spool_full"}],
        "boot-b": [{"source": "kmsg", "first_seq": 1, "last_seq": 1, "count": 1, "reason": "spool_full"}],
    }


def test_crash_after_the_drop_was_decided_finishes_it_on_open_without_counting_twice(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 30)
    spool.append([payload([10])])
    spool.append([payload([11])])
    spool.close()
    doomed = segments(tmp_path)[0]
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["dropping"] = [doomed.name]
    meta["ledger"] = [
        {
            "id": 99,
            "at": 0.0,
            "host": json.loads(payload())["host"],
            "gaps": [{"source": "kmsg", "first_seq": 10, "last_seq": 10, "count": 1, "reason": "spool_full"}],
        }
    ]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    again = Spool(tmp_path, max_bytes=1 << 30)
    got = [json.loads(b) for b in bodies(again)]
    assert [g["first_seq"] for b in got for g in b["gaps"]] == [10]
    assert [e["seq"] for b in got for e in b["events"]] == [11]
    assert not doomed.exists()
    assert again.append([payload([12])])[0] > 99


def test_set_aside_keeps_the_refused_batch_on_disk_with_the_servers_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 30)
    ids = spool.append([payload([1]), payload([2])])
    path = spool.set_aside(ids[:1], "422: events.0.tid: must be positive")
    doc = json.loads(path.read_text())
    assert path.parent == tmp_path / "rejected"
    assert doc["reason"] == "422: events.0.tid: must be positive"
    assert doc["payloads"][0]["events"][0]["seq"] == 1
    assert [r.id for r in spool.peek(10, 1 << 30)] == ids[1:]
    assert spool.rejected_batches == 1
