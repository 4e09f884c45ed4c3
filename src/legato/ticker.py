"""A period between background rounds that can be changed while a round waits."""

from __future__ import annotations

import asyncio
import contextlib
import time


class Ticker:
    """`await ticker.wait()` between rounds; setting `interval_s` applies to the wait under way."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._changed = asyncio.Event()

    @property
    def interval_s(self) -> float:
        return self._interval_s

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        self._interval_s = value
        self._changed.set()

    async def wait(self, spent_s: float = 0.0) -> None:
        """Until `interval_s` after the start of a round that took `spent_s` so far."""
        started = time.monotonic() - spent_s
        while (remaining := started + self._interval_s - time.monotonic()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
