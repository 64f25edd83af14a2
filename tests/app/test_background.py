"""A background loop asked to stop gets its grace time, and is cancelled past it."""

from __future__ import annotations

import asyncio

from app.background import finish


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
