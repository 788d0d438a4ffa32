"""How a hardware frontend (footswitches, MIDI) carries out what a player does.

Short jobs (a turn, a bypass, a snapshot recall) run one at a time in the
order they came; long ones (a pedalboard load, the tuner's start) run beside
them as tasks of their own, so that a footswitch pressed meanwhile never
waits for a load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


class Jobs:
    """One worker for short jobs, tasks for long ones; a job that fails is logged to ``log``."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._queue: asyncio.Queue[Callable[[], Awaitable[object]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def put(self, job: Callable[[], Awaitable[object]]) -> None:
        """A short job, after those before it."""
        self._queue.put_nowait(job)

    def beside(self, job: Awaitable[object]) -> None:
        """A long job, at once, beside the others."""
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Wait until every job handed over so far has been carried out (tests)."""
        await self._queue.join()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await job()
            except Exception:
                self.log.exception("a job failed")
            finally:
                self._queue.task_done()
