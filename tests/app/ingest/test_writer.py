"""The single SQLite writer: jobs sharing a transaction fail alone, answers go to their sender."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text

from app.ingest.writer import SQLiteWriter, WriterStopped
from app.store.engine import make_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER UNIQUE)"))
    yield eng
    eng.dispose()


def insert(x: int) -> object:
    def job(conn: Connection) -> int:
        conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": x})
        return x

    return job


def values(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT x FROM t ORDER BY x"))]


def test_a_failing_job_grouped_with_others_rolls_back_alone(engine: Engine) -> None:
    writer = SQLiteWriter(engine)
    writer.start()
    gate = threading.Event()
    try:
        blocker = writer.submit(lambda conn: gate.wait(10))  # holds the writer so the next queue up
        futures = [writer.submit(insert(1)), writer.submit(insert(1)), writer.submit(insert(2))]  # type: ignore[arg-type]
        gate.set()
        assert blocker.result(10) is True
        assert futures[0].result(10) == 1
        with pytest.raises(Exception, match="UNIQUE"):
            futures[1].result(10)
        assert futures[2].result(10) == 2
    finally:
        writer.stop()
    assert values(engine) == [1, 2]


def test_jobs_grouped_without_a_failure_each_get_their_answer_and_all_are_stored(engine: Engine) -> None:
    writer = SQLiteWriter(engine)
    writer.start()
    gate = threading.Event()
    try:
        blocker = writer.submit(lambda conn: gate.wait(10))  # holds the writer so the next queue up
        futures = [writer.submit(insert(x)) for x in (3, 4, 5)]  # type: ignore[arg-type]
        gate.set()
        assert blocker.result(10) is True
        assert [f.result(10) for f in futures] == [3, 4, 5]
    finally:
        writer.stop()
    assert values(engine) == [3, 4, 5]


def test_a_lone_failing_job_gets_its_error_and_stores_nothing(engine: Engine) -> None:
    writer = SQLiteWriter(engine)
    writer.start()
    try:

        def bad(conn: Connection) -> None:
            conn.execute(text("INSERT INTO t VALUES (5)"))
            raise ValueError("bad batch")

        with pytest.raises(ValueError, match="bad batch"):
            writer.submit(bad).result(10)
        assert writer.submit(insert(6)).result(10) == 6  # type: ignore[arg-type]
    finally:
        writer.stop()
    assert values(engine) == [6]


def test_stopped_writer_answers_jobs_with_writer_stopped(engine: Engine) -> None:
    writer = SQLiteWriter(engine)
    writer.start()
    writer.stop()
    with pytest.raises(WriterStopped):
        writer.submit(insert(1)).result(1)  # type: ignore[arg-type]
