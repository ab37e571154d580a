"""Every choice the handshake makes comes from the Random device.

Under a simulation's device (``SimRandom``), two handshakes with the same
seeds are byte-identical on the wire, for every key type and both versions;
signatures stay valid (checked by the peer and by OpenSSL); production keeps
OpenSSL's random PSS salts. The one primitive that cannot be seeded, ML-KEM
encapsulation, is refused in a simulation with a message naming it.
"""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from looming.errors import NotReplayable
from looming.sim.devices import SimRandom
from looming.tls import TlsConfig, TlsConnection
from looming.tls.constants import TLS12, TLS13, NamedGroup
from looming.tls.constants import SignatureScheme as S
from looming.tls.events import ApplicationData
from looming.tls.keyexchange import KeyShare, server_exchange
from looming.tls.signing import sign, simulated, verify
from looming.unix.clock import UnixClock

from .memory import FakeClock, seeded
from .pki import Pki


def _wire(pki: Pki, leaf: str, version: int, seed: int, now_s: float) -> list[bytes]:
    """Every flight of a full handshake and one echo, both ways, in order."""
    clock = FakeClock(now_s)
    server = TlsConfig(
        certificates=[pki.leaves[leaf].certified],
        versions=[version],
        random=SimRandom(seed),
        clock=clock,
    )
    client = TlsConfig(
        trust=pki.trust, versions=[version], random=SimRandom(seed + 1000), clock=clock
    )
    c = TlsConnection(client, server_side=False, server_name="localhost")
    s = TlsConnection(server, server_side=True)
    flights: list[bytes] = []
    for _ in range(10):
        out = c.bytes_to_send()
        if out:
            flights.append(out)
            s.receive(out)
        back = s.bytes_to_send()
        if back:
            flights.append(back)
            c.receive(back)
        if not out and not back:
            break
    c.send_application_data(b"ping")
    flights.append(c.bytes_to_send())
    assert (
        b"".join(e.data for e in s.receive(flights[-1]) if isinstance(e, ApplicationData))
        == b"ping"
    )
    return flights


@pytest.mark.parametrize("version", [TLS13, TLS12])
@pytest.mark.parametrize("leaf", ["rsa", "p256", "p384", "ed25519"])
def test_same_seeds_give_the_same_bytes_on_the_wire(pki: Pki, leaf: str, version: int) -> None:
    now_s = time.time()
    first = _wire(pki, leaf, version, 7, now_s)
    assert first == _wire(pki, leaf, version, 7, now_s)
    # And the seed matters: another seed gives other randoms, shares, signatures.
    other = _wire(pki, leaf, version, 8, now_s)
    assert first[0] != other[0] and first[1] != other[1]


def test_ecdsa_signatures_are_deterministic_and_valid() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    one = sign(key, S.ECDSA_SECP256R1_SHA256, b"data")
    assert one == sign(key, S.ECDSA_SECP256R1_SHA256, b"data")
    assert one != sign(key, S.ECDSA_SECP256R1_SHA256, b"other data")
    assert verify(key.public_key(), S.ECDSA_SECP256R1_SHA256, b"data", one, tls13=True)


@pytest.mark.parametrize("scheme", [S.RSA_PSS_RSAE_SHA256, S.RSA_PSS_RSAE_SHA384])
@pytest.mark.parametrize("bits", [2048, 2052, 3072])
def test_pss_under_a_simulated_device_takes_its_salt_from_the_device(
    scheme: int, bits: int
) -> None:
    key = rsa.generate_private_key(65537, bits)
    a = sign(key, scheme, b"data", SimRandom(1))
    assert a == sign(key, scheme, b"data", SimRandom(1))
    assert a != sign(key, scheme, b"data", SimRandom(2))
    assert len(a) == (key.key_size + 7) // 8
    assert verify(key.public_key(), scheme, b"data", a, tls13=True)
    algorithm = hashes.SHA256() if scheme == S.RSA_PSS_RSAE_SHA256 else hashes.SHA384()
    # OpenSSL agrees, with the salt length TLS requires (the hash's length).
    pss = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size)
    key.public_key().verify(a, b"data", pss, algorithm)


def test_pss_outside_a_simulation_keeps_openssls_random_salts() -> None:
    key = rsa.generate_private_key(65537, 2048)
    assert not simulated(seeded(1)) and simulated(SimRandom(1))
    a = sign(key, S.RSA_PSS_RSAE_SHA256, b"data", seeded(1))
    b = sign(key, S.RSA_PSS_RSAE_SHA256, b"data", seeded(1))
    assert a != b
    assert verify(key.public_key(), S.RSA_PSS_RSAE_SHA256, b"data", a, tls13=True)


@pytest.mark.parametrize("group", [NamedGroup.SECP256R1, NamedGroup.SECP384R1])
def test_nist_key_shares_come_from_the_device(group: int) -> None:
    assert KeyShare(group, SimRandom(3)).public == KeyShare(group, SimRandom(3)).public
    assert KeyShare(group, SimRandom(3)).public != KeyShare(group, SimRandom(4)).public
    # Unseeded (the host's generator): still a working exchange.
    client = KeyShare(group, seeded(5))
    reply, secret = server_exchange(group, client.public, SimRandom(6))
    assert client.shared_secret(reply) == secret


def test_mlkem_encapsulation_is_refused_in_a_simulation_with_the_reason() -> None:
    client = KeyShare(NamedGroup.X25519MLKEM768, SimRandom(1))
    with pytest.raises(NotReplayable, match="X25519MLKEM768: ML-KEM encapsulation") as info:
        server_exchange(NamedGroup.X25519MLKEM768, client.public, SimRandom(2))
    assert "leave X25519MLKEM768 out of the server's groups" in str(info.value)
    # A seeded test stream is not a simulation: the exchange works.
    reply, secret = server_exchange(NamedGroup.X25519MLKEM768, client.public, seeded(2))
    assert client.shared_secret(reply) == secret


def test_mlkem_refusal_ends_the_handshake_with_an_alert_and_the_reason(pki: Pki) -> None:
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified], random=SimRandom(1), clock=UnixClock()
    )
    client = TlsConfig(
        trust=pki.trust,
        key_share_groups=[NamedGroup.X25519MLKEM768],
        random=SimRandom(2),
        clock=UnixClock(),
    )
    c = TlsConnection(client, server_side=False, server_name="localhost")
    s = TlsConnection(server, server_side=True)
    with pytest.raises(NotReplayable, match="X25519MLKEM768"):
        s.receive(c.bytes_to_send())
    alert = s.bytes_to_send()
    assert alert[:1] == b"\x15" and alert[-1:] == b"\x50"  # a fatal internal_error alert
