"""A background loop asked to stop gets its grace time, and is cancelled past it; the app's
components stop side by side, and one that fails to stop keeps no other from stopping."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.background import finish, stop_side_by_side


def test_a_loop_that_ends_in_time_finishes_its_work_and_is_not_cancelled() -> None:
    done: list[str] = []

    async def main() -> asyncio.Task[None]:
        stop = asyncio.Event()

        async def loop() -> None:
            await stop.wait()
            await asyncio.sleep(0.01)  # the query under way when stop came
            done.append("finished")

        task = asyncio.create_task(loop())
        await asyncio.sleep(0)
        stop.set()
        await finish(task, timeout=5)
        return task

    task = asyncio.run(main())
    assert done == ["finished"]
    assert not task.cancelled()


def test_a_loop_stuck_past_the_grace_time_is_cancelled_and_shutdown_goes_on() -> None:
    async def main() -> asyncio.Task[None]:
        async def stuck() -> None:
            await asyncio.Event().wait()  # never set: a receiver that never answers

        task = asyncio.create_task(stuck())
        await finish(task, timeout=0.05)
        await asyncio.sleep(0)
        return task

    assert asyncio.run(main()).cancelled()


def test_no_loop_started_is_nothing_to_finish() -> None:
    asyncio.run(finish(None, timeout=5))


def test_components_stop_side_by_side_so_shutdown_waits_for_the_longest_not_the_sum() -> None:
    # Each stop waits until every stop has begun: run one after another, the first would wait
    # for ever (finish() cancels it after 5 s and the others never overlap it).
    order: list[str] = []

    async def main() -> list[str]:
        begun = {name: asyncio.Event() for name in ("alerting", "retention", "metrics")}

        async def stop(name: str) -> None:
            begun[name].set()
            order.append(f"{name} begins")
            for event in begun.values():
                await event.wait()
            order.append(f"{name} ends")

        return await asyncio.wait_for(stop_side_by_side({n: stop(n) for n in begun}), timeout=30)

    assert asyncio.run(main()) == []
    assert order[:3] == ["alerting begins", "retention begins", "metrics begins"]
    assert sorted(order[3:]) == ["alerting ends", "metrics ends", "retention ends"]


def test_a_stop_that_fails_is_logged_and_the_others_still_stop(caplog: pytest.LogCaptureFixture) -> None:
    stopped: list[str] = []

    async def fails() -> None:
        raise RuntimeError("lease table is gone")

    async def works(name: str) -> None:
        await asyncio.sleep(0)
        stopped.append(name)

    async def main() -> list[str]:
        return await stop_side_by_side(
            {"retention": fails(), "alerting": works("alerting"), "auth": works("auth")}
        )

    with caplog.at_level(logging.ERROR, logger="splitwatch.background"):
        assert asyncio.run(main()) == ["retention"]
    assert sorted(stopped) == ["alerting", "auth"]
    assert "stopping retention failed: RuntimeError('lease table is gone')" in caplog.text
