import looming_module_that_does_not_exist  # noqa: F401

from looming.devices import Console


class BadImport:
    def __init__(self, console: Console) -> None:
        self.console = console

    async def start(self) -> None:
        await self.console.log("never reached")
