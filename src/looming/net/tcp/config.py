"""Tunables of the TCP layer and the counters it keeps."""

from __future__ import annotations

from dataclasses import dataclass, fields

MS = 1_000_000
SECOND = 1_000_000_000
CONGESTION_CONTROLS = ("cubic", "newreno")
ECN_MODES = ("off", "accept", "on")


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """Settings shared by every connection of one :class:`~looming.net.tcp.TcpLayer`.

    Durations are in nanoseconds of the Time device's clock.
    """

    send_buffer: int = 512 * 1024
    receive_buffer: int = 512 * 1024
    window_scaling: bool = True
    timestamps: bool = True
    sack: bool = True
    nodelay: bool = False
    # The ACK owed after every second full segment waits until the owner has
    # handled the whole batch of segments that arrived together (it then
    # calls flush_ack), as Linux does with GRO: one ACK per burst, not two
    # per three kilobytes. Out-of-order data is still acknowledged at once.
    coalesce_acks: bool = True
    # Hand the IPv4 layer packets of many segments when its interface cuts
    # them up itself (TSO on a vnet TAP); retransmissions stay one segment.
    segmentation_offload: bool = True
    default_mss: int = 536  # RFC 9293 3.7.1: assumed when the peer sends no MSS option
    rto_initial_ns: int = 1 * SECOND  # RFC 6298 2.1
    # RFC 6298 asks for a 1 s floor but allows less; 200 ms (as Linux) keeps
    # loss recovery on a LAN from stalling for a second at a time.
    rto_min_ns: int = 200 * MS
    rto_max_ns: int = 60 * SECOND
    syn_retries: int = 6
    synack_retries: int = 5
    data_retries: int = 15
    delayed_ack_ns: int = 40 * MS
    time_wait_ns: int = 60 * SECOND  # 2 * MSL
    fin_wait_2_timeout_ns: int = 60 * SECOND  # for connections the application closed
    keepalive: bool = False
    keepalive_idle_ns: int = 7200 * SECOND
    keepalive_interval_ns: int = 75 * SECOND
    # After a black hole lowered the MSS, how long before a larger size is
    # probed, and between searches (RFC 8899's PMTU_RAISE_TIMER; plpmtud.py).
    pmtu_raise_interval_ns: int = 600 * SECOND
    keepalive_probes: int = 9
    persist_min_ns: int = 200 * MS
    persist_max_ns: int = 60 * SECOND
    syn_backlog: int = 128
    syn_cookies: bool = True
    challenge_acks_per_second: int = 100  # RFC 5961 section 7 rate limit, per connection
    max_out_of_order_segments: int = 256
    # Loss recovery: "cubic" (RFC 9438) or "newreno" (RFC 5681); RACK-TLP
    # loss detection (RFC 8985) on connections with SACK; spurious
    # retransmission undo by timestamps, D-SACK (RFC 2883) and F-RTO (RFC 5682).
    congestion_control: str = "cubic"
    tail_loss_probe: bool = True
    undo: bool = True
    # ECN (RFC 3168): "accept" when the peer's SYN asks (Linux's tcp_ecn=2),
    # "on" to ask in our SYNs too, "off" never.
    ecn: str = "accept"
    ephemeral_ports: tuple[int, int] = (32768, 60999)

    def __post_init__(self) -> None:
        if self.send_buffer < 1 or self.receive_buffer < 1:
            raise ValueError("TCP buffers must hold at least one byte")
        if self.receive_buffer > (1 << 30):
            raise ValueError("a TCP receive buffer cannot exceed 1 GiB (window scale 14)")
        if self.congestion_control not in CONGESTION_CONTROLS:
            raise ValueError(
                f"unknown congestion control {self.congestion_control!r}: "
                f"use one of {', '.join(CONGESTION_CONTROLS)}"
            )
        if self.ecn not in ECN_MODES:
            raise ValueError(f"unknown ECN mode {self.ecn!r}: use one of {', '.join(ECN_MODES)}")
        if not 0 < self.ephemeral_ports[0] <= self.ephemeral_ports[1] <= 65535:
            raise ValueError(f"bad ephemeral port range {self.ephemeral_ports}")

    @property
    def window_scale(self) -> int:
        """The scale we ask for: the smallest shift that advertises the whole buffer."""
        shift = 0
        while (self.receive_buffer >> shift) > 0xFFFF and shift < 14:
            shift += 1
        return shift


@dataclass(slots=True)
class TcpStats:
    """Counters of one TCP layer (all connections together)."""

    segments_in: int = 0
    segments_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    retransmits: int = 0
    fast_retransmits: int = 0  # recoveries entered without a timeout
    segments_deemed_lost: int = 0  # by RACK, or by duplicate ACKs without SACK
    tail_loss_probes: int = 0
    acks_repeated: int = 0  # a pure ACK sent again after the peer fell silent
    dsacks_received: int = 0
    data_segments_with_sack: int = 0  # our data carried SACK blocks (RFC 2018 4)
    spurious_recoveries_undone: int = 0
    spurious_timeouts_undone: int = 0
    ecn_negotiated: int = 0  # connections on which both ends agreed to ECN
    ecn_ce_received: int = 0  # segments that arrived marked Congestion Experienced
    ecn_echoes_received: int = 0  # ACKs with ECE that reduced the window
    timeouts: int = 0
    window_probe_timeouts: int = 0  # aborted: zero-window probes went unanswered
    segments_merged: int = 0  # in-order arrivals of a burst taken with the one before
    pmtu_probes: int = 0  # segments sent larger, to find a larger path MTU
    pmtu_probes_acked: int = 0
    pmtu_probes_lost: int = 0
    malformed_dropped: int = 0
    checksum_errors: int = 0
    no_connection: int = 0
    resets_sent: int = 0
    rst_ratelimited: int = 0
    resets_received: int = 0
    challenge_acks: int = 0
    paws_dropped: int = 0
    out_of_window: int = 0
    cookies_sent: int = 0
    cookies_accepted: int = 0
    cookies_rejected: int = 0
    backlog_dropped: int = 0
    connections_opened: int = 0
    connections_accepted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in fields(self)}
