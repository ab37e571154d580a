"""The key log (SSLKEYLOGFILE format): tshark decrypts a captured looming connection with it."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import pytest

from looming.tls import TLS12, TLS13, TlsConfig
from looming.tls.flow import open_connection
from looming.tls.keylog import KeyLogFile
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .peers import EchoServer
from .pki import Pki

pytestmark = pytest.mark.root  # capturing on the loopback interface


class Capture:
    """dumpcap on loopback for one port.

    dumpcap writes its file's header before its capture is live, so on a
    busy machine a connection made right after could be missed. UDP probes
    to the port (never a TCP stream, so tshark's stream 0 is still the TLS
    connection) are sent until one is seen in the file."""

    def __init__(self, port: int, path: Path) -> None:
        self.path = path
        self.process = subprocess.Popen(
            ["dumpcap", "-q", "-i", "lo", "-f", f"port {port}", "-w", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while not path.exists() or path.stat().st_size == 0:
            self._check(deadline)
            time.sleep(0.02)
        header = path.stat().st_size
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            while path.stat().st_size == header:
                self._check(deadline)
                probe.sendto(b"capture probe", ("127.0.0.1", port))
                time.sleep(0.02)

    def _check(self, deadline: float) -> None:
        if time.monotonic() > deadline or self.process.poll() is not None:
            raise AssertionError("dumpcap did not start capturing")

    def stop(self) -> None:
        time.sleep(0.3)  # the last segments reach the capture
        self.process.terminate()
        self.process.wait(10)


def _decrypted_stream(capture: Path, keylog: Path) -> str:
    result = subprocess.run(
        ["tshark", "-r", str(capture), "-o", f"tls.keylog_file:{keylog}", "-q",
         "-z", "follow,tls,ascii,0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("version", [TLS13, TLS12], ids=["1.3", "1.2"])
@pytest.mark.parametrize("side", ["server", "client"])
def test_tshark_decrypts_with_the_key_log(
    pki: Pki, tmp_path: Path, version: int, side: str
) -> None:
    keylog_path = tmp_path / "keys.log"
    key_log = KeyLogFile(keylog_path)
    leaf = pki.leaves["p256"]
    server_config = TlsConfig(
        certificates=[leaf.certified],
        versions=[version],
        key_log=key_log if side == "server" else None,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    client_config = TlsConfig(
        trust=pki.trust,
        versions=[version],
        key_log=key_log if side == "client" else None,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    secret_message = b"the looming key log works %d" % version

    async def scenario(capture_path: Path) -> bytes:
        async with EchoServer(server_config) as server:
            capture = Capture(server.port, capture_path)
            try:
                flow = await open_connection(
                    "127.0.0.1", server.port, client_config, server_name="localhost"
                )
                await flow.write(secret_message)
                reply = await flow.read()
                await flow.close()
            finally:
                await asyncio.to_thread(capture.stop)
            return reply

    capture_path = tmp_path / "capture.pcapng"
    assert asyncio.run(scenario(capture_path)) == b"echo:" + secret_message
    key_log.close()
    lines = keylog_path.read_text().splitlines()
    labels = {line.split()[0] for line in lines}
    if version == TLS13:
        assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"} <= labels  # fmt: skip
    else:
        assert labels == {"CLIENT_RANDOM"}
    assert keylog_path.stat().st_mode & 0o077 == 0
    stream = _decrypted_stream(capture_path, keylog_path)
    assert secret_message.decode() in stream and "echo:" in stream, stream
    # Without the key log the same capture shows no plaintext.
    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert secret_message.decode() not in _decrypted_stream(capture_path, empty)
