from looming.devices import Console


class Crash:
    def __init__(self, console: Console) -> None:
        self.console = console

    async def start(self) -> None:
        await self.console.log("about to fail")
        raise RuntimeError("the crash unikernel fails on purpose")
