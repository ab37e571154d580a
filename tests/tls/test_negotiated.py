"""The handshake answers in its own ``Negotiated`` record; the engine only reads it.

Checked three ways: no handshake module assigns to an attribute of its
connection (the source, by AST), the engine's negotiated values are read-only
properties over the record, and after real handshakes (full and resumed, TLS
1.3 and 1.2, 0-RTT) the record, the engine's properties and the
HandshakeComplete event all say the same thing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from looming.tls import ClientSessionCache, HandshakeComplete, TlsConfig, TlsConnection
from looming.tls.constants import TLS12, TLS13
from looming.tls.link import Negotiated
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .memory import Pair, connect
from .pki import Pki

TLS_DIR = Path(__file__).resolve().parents[2] / "src" / "looming" / "tls"
HANDSHAKE_MODULES = [
    "client.py",
    "client12.py",
    "client_psk.py",
    "server.py",
    "server12.py",
    "server_psk.py",
    "tls12.py",
]
# The engine's properties that read the record, one per Negotiated field.
FIELDS = list(Negotiated.__dataclass_fields__)


def _connection_writes(source: str) -> list[str]:
    """Assignments to ``conn.x``, ``self.conn.x`` or ``hs.conn.x`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            if not isinstance(target, ast.Attribute):
                continue
            owner = target.value
            if (isinstance(owner, ast.Name) and owner.id == "conn") or (
                isinstance(owner, ast.Attribute) and owner.attr == "conn"
            ):
                found.append(f"{ast.unparse(target)} (line {target.lineno})")
    return found


def test_the_checker_sees_connection_writes() -> None:
    source = "conn.version = 1\nself.conn.suite = 2\nhs.conn.resumed += 1\nself.x.y = 3\n"
    assert len(_connection_writes(source)) == 3


@pytest.mark.parametrize("module", HANDSHAKE_MODULES)
def test_handshakes_do_not_write_their_connection(module: str) -> None:
    assert _connection_writes((TLS_DIR / module).read_text()) == []


def _configs(pki: Pki, version: int, **client: object) -> tuple[TlsConfig, TlsConfig]:
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        versions=[version],
        alpn_protocols=[b"h2"],
        max_early_data=1024,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    client_config = TlsConfig(
        trust=pki.trust,
        versions=[version],
        alpn_protocols=[b"h2", b"http/1.1"],
        session_cache=ClientSessionCache(),
        random=UnixRandom(),
        clock=UnixClock(),
        **client,  # type: ignore[arg-type]
    )
    return client_config, server


def _agree(pair: Pair) -> None:
    """Record, properties and HandshakeComplete event agree, on both sides."""
    for conn, events in ((pair.client, pair.client_events), (pair.server, pair.server_events)):
        record = conn.negotiated
        assert isinstance(record, Negotiated)
        for name in FIELDS:
            assert getattr(conn, name) is getattr(record, name), name
        (done,) = [e for e in events if isinstance(e, HandshakeComplete)]
        assert done.version == record.version
        assert record.suite is not None and done.cipher_suite == record.suite.suite
        assert done.alpn_protocol == record.alpn_protocol == b"h2"
        assert done.server_name == record.server_name == "localhost"
        assert done.resumed == record.resumed
        assert done.early_data_accepted == record.early_data_accepted
        assert done.peer_certificates == record.peer_certificates
    assert pair.client.client_random == pair.server.client_random != b""


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_full_then_resumed_handshake_answer_in_the_record(pki: Pki, version: int) -> None:
    client, server = _configs(pki, version)
    first = connect(client, server)
    first.pump()  # the TLS 1.3 ticket
    _agree(first)
    assert not first.client.resumed and first.client.peer_certificates
    assert first.client.session is not None
    if version == TLS12:
        assert first.client.extended_master_secret and first.server.extended_master_secret
        assert first.client.master_secret12 == first.server.master_secret12 != b""
    second = connect(client, server)
    _agree(second)
    assert second.client.resumed and second.server.resumed
    assert (second.client.resumption_mode is None) == (version == TLS12)


def test_early_data_accepted_is_reported_by_the_record(pki: Pki) -> None:
    client, server = _configs(pki, TLS13, enable_early_data=True)
    connect(client, server).pump()
    pair = connect(client, server, early_data=b"early")
    _agree(pair)
    assert pair.client.early_data_accepted and pair.server.early_data_accepted
    assert not pair.server.receiving_early_data  # EndOfEarlyData arrived


def test_negotiated_values_are_read_only_on_the_connection(pki: Pki) -> None:
    client, _ = _configs(pki, TLS13)
    conn = TlsConnection(client, server_side=False, server_name="localhost")
    for name in FIELDS:
        with pytest.raises(AttributeError):
            setattr(conn, name, getattr(conn, name))
    assert conn.server_name == "localhost" and conn.version is None
