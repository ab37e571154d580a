"""Waiting with a timeout measured by the Time device (never the host clock)."""

from __future__ import annotations

import asyncio
from typing import Any

from looming.devices.time import Time


async def wait_until_done(future: asyncio.Future[Any], time: Time, seconds: float) -> bool:
    """Wait for ``future`` at most ``seconds``; whether it completed.

    The future is not cancelled on timeout: others may still wait on it.
    """
    if future.done():
        return True
    sleeper = asyncio.ensure_future(time.sleep(seconds))
    try:
        await asyncio.wait({future, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
    return future.done()
