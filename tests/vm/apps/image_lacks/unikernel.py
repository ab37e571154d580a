# xmlrpc is installed here (the host's standard library) but never put in
# a VM image: the build must say so, not the guest at every boot.
import xmlrpc.client  # noqa: F401

from looming.devices import Console


class ImageLacks:
    def __init__(self, console: Console) -> None:
        self.console = console

    async def start(self) -> None:
        await self.console.log("never reached")
