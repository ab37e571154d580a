"""Counts its boots in a kv_rw store and in the first sector of a block
device, and prints both: on a lasting disk each boot prints one more."""

from looming.devices import Block, Console, KvRw
from looming.errors import KeyNotFound


class Counter:
    def __init__(self, console: Console, state: KvRw, disk: Block) -> None:
        self.console = console
        self.state = state
        self.disk = disk

    async def start(self) -> None:
        try:
            boots = int(await self.state.get("boots")) + 1
        except KeyNotFound:
            boots = 1
        await self.state.set("boots", str(boots).encode())
        info = await self.disk.info()
        sector = await self.disk.read(0, 1)
        written = int.from_bytes(sector[:8], "little") + 1
        await self.disk.write(0, written.to_bytes(8, "little").ljust(info.sector_size, b"\0"))
        await self.disk.flush()
        await self.console.log(f"counter: kv_rw boots={boots} block boots={written}")
