"""Ephemeral key exchange for each named group, with keys drawn from a Random device.

Scalar arithmetic happens inside OpenSSL, but every private key is made from
the Random device's bytes (on a host, the system's CSPRNG), so that a seeded or
simulated run replays exactly: X25519 keys are 32 device bytes, P-256 and P-384
scalars are derived from the device as FIPS 186-5 appendix A.4.1 describes,
and ML-KEM keys come from a 64-byte device seed. ML-KEM encapsulation (the
server's side of X25519MLKEM768) draws its randomness inside OpenSSL, which
cannot be seeded: under a simulated device it is refused
(:class:`looming.errors.NotReplayable`), naming the group and how to avoid it.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from looming.devices.random import Random
from looming.errors import NotReplayable

from .constants import AlertDescription, NamedGroup
from .errors import TlsProtocolError
from .signing import simulated

_CURVES: dict[int, ec.EllipticCurve] = {
    NamedGroup.SECP256R1: ec.SECP256R1(),
    NamedGroup.SECP384R1: ec.SECP384R1(),
}
# The order n of each curve's base point (SEC 2 section 2.4).
_ORDERS: dict[int, int] = {
    NamedGroup.SECP256R1: int(
        "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16
    ),
    NamedGroup.SECP384R1: int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
}
_POINT_LENGTH: dict[int, int] = {NamedGroup.SECP256R1: 65, NamedGroup.SECP384R1: 97}
_MLKEM768_PUBLIC = 1184
_MLKEM768_CIPHERTEXT = 1088

SUPPORTED_GROUPS = (
    NamedGroup.X25519,
    NamedGroup.SECP256R1,
    NamedGroup.SECP384R1,
    NamedGroup.X25519MLKEM768,
)


def _bad_share(group: int) -> TlsProtocolError:
    return TlsProtocolError(
        AlertDescription.ILLEGAL_PARAMETER, f"invalid key share for group {group:#06x}"
    )


def _x25519_key(random: Random) -> x25519.X25519PrivateKey:
    # An X25519 private key is any 32 random bytes (OpenSSL clamps them, RFC
    # 7748 section 5), so the device's bytes serve seeded and unseeded runs
    # alike; loading them costs a quarter less than OpenSSL's keygen call.
    return x25519.X25519PrivateKey.from_private_bytes(random.bytes(32))


def _ec_key(group: int, random: Random) -> ec.EllipticCurvePrivateKey:
    # "Extra random bits" (FIPS 186-5 A.4.1): 64 bits more than the order,
    # reduced into [1, n-1]; the bias is below 2**-64.
    order = _ORDERS[group]
    extra = int.from_bytes(random.bytes((order.bit_length() + 64 + 7) // 8), "big")
    return ec.derive_private_key(extra % (order - 1) + 1, _CURVES[group])


def _x25519_shared(private: x25519.X25519PrivateKey, peer: bytes, group: int) -> bytes:
    if len(peer) != 32:
        raise _bad_share(group)
    try:
        return private.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
    except ValueError as exc:  # all-zero result: a small-order point
        raise _bad_share(group) from exc


class KeyShare:
    """One client key share: ``public`` goes on the wire, ``shared_secret`` finishes it."""

    def __init__(self, group: int, random: Random) -> None:
        self.group = group
        self._x25519: x25519.X25519PrivateKey | None = None
        self._ec: ec.EllipticCurvePrivateKey | None = None
        self._mlkem: mlkem.MLKEM768PrivateKey | None = None
        if group == NamedGroup.X25519:
            self._x25519 = _x25519_key(random)
            self.public = self._x25519.public_key().public_bytes_raw()
        elif group in _CURVES:
            self._ec = _ec_key(group, random)
            self.public = self._ec.public_key().public_bytes(
                Encoding.X962, PublicFormat.UncompressedPoint
            )
        elif group == NamedGroup.X25519MLKEM768:
            self._mlkem = mlkem.MLKEM768PrivateKey.from_seed_bytes(random.bytes(64))
            self._x25519 = _x25519_key(random)
            self.public = (
                self._mlkem.public_key().public_bytes_raw()
                + self._x25519.public_key().public_bytes_raw()
            )
        else:
            raise ValueError(f"unsupported group {group:#06x}")

    def shared_secret(self, peer_share: bytes) -> bytes:
        """Complete the exchange with the server's share (client side)."""
        if self._ec is not None:
            return _ec_shared(self._ec, peer_share, self.group)
        if self._mlkem is not None:
            assert self._x25519 is not None
            if len(peer_share) != _MLKEM768_CIPHERTEXT + 32:
                raise _bad_share(self.group)
            try:
                kem_secret = self._mlkem.decapsulate(peer_share[:_MLKEM768_CIPHERTEXT])
            except ValueError as exc:
                raise _bad_share(self.group) from exc
            return kem_secret + _x25519_shared(
                self._x25519, peer_share[_MLKEM768_CIPHERTEXT:], self.group
            )
        assert self._x25519 is not None
        return _x25519_shared(self._x25519, peer_share, self.group)


def _ec_shared(private: ec.EllipticCurvePrivateKey, peer: bytes, group: int) -> bytes:
    if len(peer) != _POINT_LENGTH[group] or peer[0] != 4:
        raise _bad_share(group)
    try:
        public = ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[group], peer)
        return private.exchange(ec.ECDH(), public)
    except ValueError as exc:
        raise _bad_share(group) from exc


def server_exchange(group: int, client_share: bytes, random: Random) -> tuple[bytes, bytes]:
    """Answer a client's share: (server's share for the wire, shared secret)."""
    if group == NamedGroup.X25519MLKEM768:
        if len(client_share) != _MLKEM768_PUBLIC + 32:
            raise _bad_share(group)
        if simulated(random):
            raise NotReplayable(
                "X25519MLKEM768: ML-KEM encapsulation takes its randomness from OpenSSL, "
                "which a simulation cannot seed, so this run could not be replayed; "
                "leave X25519MLKEM768 out of the server's groups in the simulation "
                "(TlsConfig(groups=...)), or have the client send an X25519 key share"
            )
        try:
            kem_public = mlkem.MLKEM768PublicKey.from_public_bytes(client_share[:_MLKEM768_PUBLIC])
            kem_secret, ciphertext = kem_public.encapsulate()
        except ValueError as exc:
            raise _bad_share(group) from exc
        own = _x25519_key(random)
        ecdh = _x25519_shared(own, client_share[_MLKEM768_PUBLIC:], group)
        return ciphertext + own.public_key().public_bytes_raw(), kem_secret + ecdh
    share = KeyShare(group, random)
    return share.public, share.shared_secret(client_share)
