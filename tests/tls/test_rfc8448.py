"""The TLS 1.3 key schedule against the published trace of RFC 8448 section 3.

The client's X25519 key comes in through an injected Random device, as every
key the engine makes does, so the same path the engine uses is checked.
"""

from __future__ import annotations

from looming.tls.constants import NamedGroup
from looming.tls.keyexchange import KeyShare
from looming.tls.keyschedule import KeySchedule13, traffic_keys

H = bytes.fromhex
CLIENT_PRIVATE = H("49af42ba7f7994852d713ef2784bcbcaa7911de26adc5642cb634540e7ea5005")
SERVER_PUBLIC = H("c9828876112095fe66762bdbf7c672e156d6cc253b833df1dd69b1b04e751f0f")
SHARED = H("8bd4054fb55b9d63fdfbacf9f04b9f0d35e6d63f537563efd46272900f89492d")
HASH_CH_SH = H("860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8")
HASH_CH_SERVER_FINISHED = H("9608102a0f1ccc6db6250b7b7e417b1a000eaada3daae4777a7686c9ff83df13")


class ScriptedRandom:
    """A seeded Random device that hands out fixed bytes in order."""

    seeded = True

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def bytes(self, n: int) -> bytes:
        chunk = self.chunks.pop(0)
        assert len(chunk) == n
        return chunk

    def randint(self, low: int, high: int) -> int:
        return low

    def random(self) -> float:
        return 0.0


def test_x25519_share_from_injected_randomness() -> None:
    share = KeyShare(NamedGroup.X25519, ScriptedRandom(CLIENT_PRIVATE))
    assert share.shared_secret(SERVER_PUBLIC) == SHARED


def test_key_schedule_matches_rfc8448() -> None:
    schedule = KeySchedule13("sha256")
    assert schedule.early_secret == H(
        "33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a"
    )
    schedule.enter_handshake(SHARED)
    assert schedule.handshake_secret == H(
        "1dc826e93606aa6fdc0aadc12f741b01046aa6b99f691ed221a9f0ca043fbeac"
    )
    client_hs = schedule.derive(schedule.handshake_secret, b"c hs traffic", HASH_CH_SH)
    server_hs = schedule.derive(schedule.handshake_secret, b"s hs traffic", HASH_CH_SH)
    assert client_hs == H("b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21")
    assert server_hs == H("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    assert traffic_keys("sha256", server_hs, 16) == (
        H("3fce516009c21727d0f2e4e86ee403bc"),
        H("5d313eb2671276ee13000b30"),
    )
    schedule.enter_master()
    assert schedule.master_secret == H(
        "18df06843d13a08bf2a449844c5f8a478001bc4d4c627984d5a41da8d0402919"
    )
    client_ap = schedule.derive(schedule.master_secret, b"c ap traffic", HASH_CH_SERVER_FINISHED)
    server_ap = schedule.derive(schedule.master_secret, b"s ap traffic", HASH_CH_SERVER_FINISHED)
    assert traffic_keys("sha256", client_ap, 16)[1] == H("5b78923dee08579033e523d9")
    assert traffic_keys("sha256", server_ap, 16)[1] == H("cf782b88dd83549aadf1e984")
