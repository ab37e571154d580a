"""Session-ticket keys: rotation on a schedule, and a key file shared by two server
processes so that OpenSSL's s_client resumes on one a session begun on the other."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from looming.tls.session import TicketKeys, TicketState

from .memory import seeded
from .peers import free_port, run, server_process
from .pki import Pki
from .test_cli import LOOMING_TLS


def _state(issued_ms: int) -> TicketState:
    return TicketState(
        version=0x0304, cipher_suite=0x1301, secret=bytes(32), ticket_age_add=1,
        issued_ms=issued_ms, lifetime_s=7200, max_early_data=0, alpn_protocol=b"",
        server_name="localhost", ticket_id=os.urandom(16),
    )  # fmt: skip


def test_rotation_keeps_the_previous_key_for_one_period() -> None:
    keys = TicketKeys(seeded(5), rotate_after_s=60, keep=2)
    first = keys.seal(_state(0))
    assert keys.open(first) is not None
    second = keys.seal(_state(61_000))  # a new sealing key
    assert first[:16] != second[:16]
    assert keys.open(first) is not None and keys.open(second) is not None
    third = keys.seal(_state(122_000))
    assert keys.open(first) is None  # two periods old: forgotten
    assert keys.open(second) is not None and keys.open(third) is not None


def test_key_file_must_hold_whole_keys() -> None:
    with pytest.raises(ValueError, match="48-byte keys"):
        TicketKeys.from_bytes(bytes(47), seeded(1))
    keys = TicketKeys.from_bytes(bytes(range(48)) + bytes(48), seeded(1))
    assert keys.names == [bytes(range(16)), bytes(16)]
    other = TicketKeys.from_bytes(bytes(48), seeded(2))  # the second key alone
    assert other.open(keys.seal(_state(0))) is None  # sealed with the first
    assert keys.open(other.seal(_state(0))) is not None  # opened with the second


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_two_server_processes_resume_each_others_sessions(
    pki: Pki, tmp_path: Path, version: str
) -> None:
    key_file = tmp_path / "ticket.keys"
    key_file.write_bytes(os.urandom(48))
    leaf = pki.leaves["p256"]
    session = tmp_path / "session.pem"

    def serve(port: int, keys: Path | None) -> list[str]:
        command = [*LOOMING_TLS, "serve", "--http", "--port", str(port), "--cert",
                   str(leaf.cert_path), "--key", str(leaf.key_path)]  # fmt: skip
        return command + (["--ticket-keys", str(keys)] if keys is not None else [])

    async def s_client(port: int, *extra: str) -> str:
        _rc, out, err = await run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
             str(pki.ca_path), "-servername", "localhost", "-ign_eof", version, *extra],
            b"GET / HTTP/1.0\r\n\r\n",
        )  # fmt: skip
        return out + err

    async def scenario() -> tuple[str, str, str]:
        port_a, port_b, port_c = free_port(), free_port(), free_port()
        async with (
            server_process(serve(port_a, key_file), port_a, "listening on"),
            server_process(serve(port_b, key_file), port_b, "listening on"),
            server_process(serve(port_c, None), port_c, "listening on"),
        ):
            first = await s_client(port_a, "-sess_out", str(session))
            on_b = await s_client(port_b, "-sess_in", str(session))
            on_c = await s_client(port_c, "-sess_in", str(session))
        return first, on_b, on_c

    first, on_b, on_c = asyncio.run(scenario())
    assert "New, TLSv1" in first and "hello from looming" in first, first
    assert "Reused, TLSv1" in on_b and "hello from looming" in on_b, on_b
    # A server with its own keys cannot open the ticket: a full handshake instead.
    assert "New, TLSv1" in on_c and "hello from looming" in on_c, on_c


def test_key_file_reloaded_when_it_changes_and_kept_when_broken(tmp_path: Path) -> None:
    from looming.tls.ticket_file import load_ticket_key_file, watch_ticket_key_file

    key_file = tmp_path / "ticket.keys"
    key_file.write_bytes(bytes(48))
    keys = load_ticket_key_file(key_file, seeded(1))

    async def scenario() -> list[list[bytes]]:
        watcher = asyncio.create_task(watch_ticket_key_file(key_file, keys, 0.01))
        seen = [keys.names]
        key_file.write_bytes(b"\x01" * 48 + bytes(48))  # a new key first, the old one kept
        await asyncio.sleep(0.2)
        seen.append(keys.names)
        key_file.write_bytes(b"broken")
        await asyncio.sleep(0.2)
        seen.append(keys.names)
        watcher.cancel()
        return seen

    before, rotated, after_broken = asyncio.run(scenario())
    assert before == [bytes(16)]
    assert rotated == [b"\x01" * 16, bytes(16)]
    assert after_broken == rotated
