"""Ephemeral key exchange for each named group, with keys drawn from a Random device.

Scalar arithmetic happens inside OpenSSL. X25519 private keys are the Random
device's bytes; for the NIST curves an unseeded device leaves the key to
OpenSSL's generator, and a seeded one (tests, simulation) derives it from the
device's bytes so a run can be replayed.
ML-KEM encapsulation draws its own randomness inside OpenSSL.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from looming.devices.random import Random

from .constants import AlertDescription, NamedGroup
from .errors import TlsProtocolError

_CURVES: dict[int, ec.EllipticCurve] = {
    NamedGroup.SECP256R1: ec.SECP256R1(),
    NamedGroup.SECP384R1: ec.SECP384R1(),
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
    curve = _CURVES[group]
    if random.seeded:
        # Rejection-free derivation is fine here: seeded streams never make real keys.
        order_bytes = (curve.key_size + 7) // 8
        value = int.from_bytes(random.bytes(order_bytes), "big") >> 1 or 1
        return ec.derive_private_key(value, curve)
    return ec.generate_private_key(curve)


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
