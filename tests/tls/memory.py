"""Helpers that run two looming engines against each other in memory."""

from __future__ import annotations

from dataclasses import dataclass, field

from looming.tls import Event, TlsConfig, TlsConnection
from looming.unix.random import UnixRandom


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, start_s: float = 1_800_000_000.0) -> None:
        self.now_s = start_s

    def now_ns(self) -> int:
        return int(self.now_s * 1e9)

    def now(self) -> float:
        return self.now_s

    def utc_offset_s(self) -> int:
        return 0


@dataclass
class Pair:
    client: TlsConnection
    server: TlsConnection
    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)

    def pump(self, rounds: int = 10) -> None:
        for _ in range(rounds):
            moved = False
            out = self.client.bytes_to_send()
            if out:
                moved = True
                self.server_events += self.server.receive(out)
            out = self.server.bytes_to_send()
            if out:
                moved = True
                self.client_events += self.client.receive(out)
            if not moved:
                return

    def client_sends(self, data: bytes) -> list[Event]:
        self.client.send_application_data(data)
        return self.server.receive(self.client.bytes_to_send())

    def server_sends(self, data: bytes) -> list[Event]:
        self.server.send_application_data(data)
        return self.client.receive(self.server.bytes_to_send())


def connect(
    client_config: TlsConfig,
    server_config: TlsConfig,
    server_name: str | None = "localhost",
    **client_args: object,
) -> Pair:
    server = TlsConnection(server_config, server_side=True)
    client = TlsConnection(client_config, server_side=False, server_name=server_name, **client_args)  # type: ignore[arg-type]
    pair = Pair(client, server)
    pair.pump()
    return pair


def seeded(seed: int) -> UnixRandom:
    return UnixRandom(seed=seed)
