"""A ledger that applies each client request once, however often it is sent.

Clients send ``APPLY <request id> <amount>`` and retry, with the same id,
until they read ``OK <request id> <position>``. The server appends each new
request to a durable ledger (the ``ledger`` kv_rw store, one key per entry,
in ``_build/ledger/`` unless ``--ledger-dir`` says where) and remembers, in
a duplicate-request table, where each request id went, so that a retry is
answered from the table instead of applied again. An
append is acknowledged after a flush of ``--sync-ms`` milliseconds.
``LEDGER`` lists every entry (``ENTRY <position> <request id> <amount>``)
and then ``END <count>``.

The table is the point of the example. With ``--recover-table`` (the
default) it is rebuilt from the ledger at boot. With
``--recover-table false`` it lives only in memory: it is lost when the
server crashes, and a request applied just before a crash, whose reply
never reached the client, is applied a second time when the client retries
(see examples/scenarios/dedup_crash.py).
"""

import asyncio
import logging

from looming.devices import Console, KvRw, Stack, TcpFlow, Time
from looming.errors import LoomingError

log = logging.getLogger("dedup")

MAX_LINE = 200


class Ledger:
    def __init__(
        self,
        console: Console,
        time: Time,
        ledger: KvRw,
        stack: Stack,
        *,
        port: int,
        recover_table: bool,
        sync_ms: int,
    ) -> None:
        self.console = console
        self.time = time
        self.sync_s = sync_ms / 1000
        self.ledger = ledger
        self.stack = stack
        self.port = port
        self.recover_table = recover_table
        # request id -> its position in the ledger
        self.table: dict[str, int] = {}
        self.count = 0
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        entries = await self.entries()
        self.count = len(entries)
        if self.recover_table:
            self.table = {request: position for position, request, _amount in entries}
        listener = await self.stack.tcp.listen(self.port, self.serve)
        await self.console.log(
            f"ledger of {self.count} entries, table of {len(self.table)}, "
            f"listening on port {listener.port}"
        )
        await asyncio.Event().wait()

    async def entries(self) -> list[tuple[int, str, int]]:
        """(position, request id, amount) of every entry, in order."""
        if await self.ledger.exists("entries") is None:
            return []
        found = []
        for name, _kind in await self.ledger.list("entries"):
            request, _, amount = (await self.ledger.get(f"entries/{name}")).decode().partition(" ")
            found.append((int(name), request, int(amount)))
        return sorted(found)

    async def apply(self, request: str, amount: int) -> int:
        """The ledger position of ``request``: appended now unless the table
        says it was already."""
        async with self.lock:
            known = self.table.get(request)
            if known is not None:
                log.info("retry of %s: already at %d", request, known)
                return known
            position = self.count
            await self.ledger.set(f"entries/{position:08d}", f"{request} {amount}".encode())
            self.count += 1
            self.table[request] = position
            log.info("applied %s at %d", request, position)
        # The append is acknowledged once flushed (a disk's flush, modelled
        # as a wait): a crash before then loses the reply, not the entry.
        await self.time.sleep(self.sync_s)
        return position

    async def serve(self, flow: TcpFlow) -> None:
        buffer = b""
        try:
            while True:
                while b"\n" not in buffer:
                    data = await flow.read()
                    if not data or len(buffer) > MAX_LINE:
                        return
                    buffer += data
                line, _, buffer = buffer.partition(b"\n")
                await flow.write(await self.answer(line.decode("ascii", "replace").split()))
        except LoomingError as error:
            log.info("connection ended: %s", error)
        finally:
            await flow.close()

    async def answer(self, words: list[str]) -> bytes:
        if len(words) == 3 and words[0] == "APPLY" and words[2].isdigit():
            position = await self.apply(words[1], int(words[2]))
            return f"OK {words[1]} {position}\n".encode()
        if words == ["LEDGER"]:
            entries = await self.entries()
            lines = [f"ENTRY {p} {r} {a}\n" for p, r, a in entries]
            return "".join([*lines, f"END {len(entries)}\n"]).encode()
        return b"ERROR say 'APPLY <id> <amount>' or 'LEDGER'\n"
