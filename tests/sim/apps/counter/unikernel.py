"""Counts its boots in a read-write store and ticks once a second."""

from looming.devices import Clock, Console, KvRw, Time
from looming.errors import KeyNotFound


class BootCounter:
    def __init__(self, console: Console, time: Time, clock: Clock, state: KvRw) -> None:
        self.console, self.time, self.clock, self.state = console, time, clock, state

    async def start(self) -> None:
        try:
            boots = int(await self.state.get("boots")) + 1
        except KeyNotFound:
            boots = 1
        await self.state.set("boots", str(boots).encode())
        await self.console.log(f"boot {boots} at {self.clock.now():.3f}")
        tick = 0
        while True:
            await self.time.sleep(1.0)
            tick += 1
            await self.console.log(f"tick {tick} at {self.time.now_ns()}")
