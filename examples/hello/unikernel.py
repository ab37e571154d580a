"""Prints a greeting a second apart: the smallest unikernel."""

from looming.devices import Console, Time


class Hello:
    def __init__(self, console: Console, time: Time, *, greetings: int) -> None:
        self.console = console
        self.time = time
        self.greetings = greetings

    async def start(self) -> None:
        for i in range(self.greetings):
            if i:
                await self.time.sleep(1.0)
            await self.console.log(f"hello from looming ({i + 1}/{self.greetings})")
