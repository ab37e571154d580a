"""Prints one file of a read-only key-value store, and its digest."""

from looming.devices import Console, KvRo
from looming.errors import KeyNotFound


class PrintFile:
    def __init__(self, console: Console, store: KvRo, *, file: str) -> None:
        self.console = console
        self.store = store
        self.file = file

    async def start(self) -> None:
        try:
            data = await self.store.get(self.file)
        except KeyNotFound:
            names = [name for name, _ in await self.store.list("")]
            await self.console.log(f"no file {self.file!r}; the store has: {', '.join(names)}")
            raise SystemExit(1) from None
        await self.console.write(data)
        digest = await self.store.digest(self.file)
        await self.console.log(f"{self.file}: {len(data)} bytes, sha256 {digest}")
