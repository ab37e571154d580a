"""Running real TLS peers (OpenSSL, GnuTLS) as subprocesses, and a looming echo server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from looming.tls import TlsConfig, TlsError
from looming.tls.flow import StreamFlow, TlsFlow, tls_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run(
    args: Sequence[str], stdin: bytes = b"", timeout: float = 20.0
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class ServerProcess:
    """A server subprocess; ``output`` collects what it printed."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.output = ""

    async def finish(self, timeout: float = 10.0) -> str:
        assert self.process.stdout is not None
        try:
            rest = await asyncio.wait_for(self.process.stdout.read(), timeout)
        finally:
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()
        self.output += rest.decode(errors="replace")
        return self.output


@asynccontextmanager
async def server_process(
    args: Sequence[str], port: int, ready: str
) -> AsyncIterator[ServerProcess]:
    """Start a server and wait until it prints ``ready`` (it is then listening)."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    peer = ServerProcess(process, port)
    assert process.stdout is not None
    try:
        while ready not in peer.output:
            line = await asyncio.wait_for(process.stdout.readline(), 10)
            if not line:
                raise AssertionError(f"server exited before it was ready: {peer.output}")
            peer.output += line.decode(errors="replace")
        yield peer
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


class EchoServer:
    """A looming TLS server on loopback that echoes one message per connection."""

    def __init__(
        self, config: TlsConfig, reply_prefix: bytes = b"echo:", until_eof: bool = False
    ) -> None:
        self.config = config
        self.prefix = reply_prefix
        self.until_eof = until_eof
        self.flows: list[TlsFlow] = []
        self.errors: list[BaseException] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        flow = StreamFlow(reader, writer)
        try:
            tls = await tls_server(flow, self.config)
            self.flows.append(tls)
            data = await tls.read()
            await tls.write(self.prefix + data)
            while self.until_eof and (data := await tls.read()):
                await tls.write(self.prefix + data)
            await tls.shutdown()
        except (TlsError, OSError) as exc:
            self.errors.append(exc)
        finally:
            await flow.close()

    async def __aenter__(self) -> EchoServer:
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


class LateRelay:
    """A loopback relay that holds each server-to-client chunk for ``delay`` s
    once the client has written twice (its hello, then its Finished): what a
    server sends after the handshake arrives late, as from a loaded machine."""

    def __init__(self, port: int, delay: float) -> None:
        self.target = port
        self.delay = delay
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _downstream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_writes: list[int]
    ) -> None:
        try:
            while data := await reader.read(1 << 16):
                if client_writes[0] >= 2:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target)
        writes = [0]

        async def upstream() -> None:
            try:
                while data := await reader.read(1 << 16):
                    writes[0] += 1
                    server_writer.write(data)
                    await server_writer.drain()
            finally:
                server_writer.close()

        await asyncio.gather(
            upstream(), self._downstream(server_reader, writer, writes), return_exceptions=True
        )

    async def __aenter__(self) -> LateRelay:
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
