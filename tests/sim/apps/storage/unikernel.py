"""A line protocol over the three storage devices, for the simulator's tests.

SET k v / GET k: the kv_store (each SET a commit); PUT k v / FETCH k: the
kv_rw; WRITE n hex / READ n: sector n of the block device (flushed).
Answers: OK, VAL v, NONE or ERR reason, one line each.
"""

import asyncio

from looming.devices import Block, Console, KvRw, Stack, TcpFlow
from looming.errors import DeviceError, KeyNotFound


class Storage:
    def __init__(
        self, console: Console, store: KvRw, notes: KvRw, disk: Block, stack: Stack, *, port: int
    ) -> None:
        self.console, self.store, self.notes, self.disk = console, store, notes, disk
        self.stack, self.port = stack, port

    async def answer(self, words: list[str]) -> str:
        verb, args = words[0], words[1:]
        kv = self.store if verb in ("SET", "GET") else self.notes
        if verb in ("SET", "PUT"):
            await kv.set(args[0], args[1].encode())
            return "OK"
        if verb in ("GET", "FETCH"):
            try:
                return "VAL " + (await kv.get(args[0])).decode()
            except KeyNotFound:
                return "NONE"
        sector_size = (await self.disk.info()).sector_size
        if verb == "WRITE":
            data = bytes.fromhex(args[1]).ljust(sector_size, b"\0")
            await self.disk.write(int(args[0]), data)
            await self.disk.flush()
            return "OK"
        if verb == "READ":
            return "VAL " + (await self.disk.read(int(args[0]), 1)).rstrip(b"\0").hex()
        return "ERR unknown verb"

    async def serve(self, flow: TcpFlow) -> None:
        buffer = b""
        while data := await flow.read():
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    reply = await self.answer(line.decode().split())
                except DeviceError as error:
                    reply = f"ERR {error}"
                await flow.write(reply.encode() + b"\n")
        await flow.close()

    async def start(self) -> None:
        await self.stack.tcp.listen(self.port, self.serve)
        await self.console.log(f"storage on port {self.port}")
        await asyncio.Event().wait()
