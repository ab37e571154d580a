"""HTTP/2 pieces the HTTP/1.1 server needs before a connection becomes an
HTTP/2 one, without the ``h2`` library: checking an ``Upgrade: h2c``
request's HTTP2-Settings (RFC 7540 section 3.2.1) and refusing an
HTTP/2 client over the connection limit with a GOAWAY; and the count of
HTTP/2 refusals (:data:`abuse`), kept here so that the metrics can show it
without loading ``h2``."""

from __future__ import annotations

import base64
import binascii
import re
import sys
from collections import Counter

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REFUSED_STREAM = 0x7
"""The GOAWAY error code of a refusal: nothing was processed, retry later."""

abuse: Counter[str] = Counter()
"""HTTP/2 refusals in this process by reason (``looming.http.http2.abuse``)."""
ABUSE_REASONS = (
    "rapid_reset",
    "control_flood",
    "refused_stream",
    "header_block",
    "protocol_error",
    "stalled",
    "idle",
)
"""What :data:`abuse` counts: shown in the metrics even while zero."""

_TOKEN68 = re.compile(rb"[A-Za-z0-9_-]*={0,2}")
_SETTING_RANGES = {
    0x2: (0, 1),  # ENABLE_PUSH
    0x4: (0, 2**31 - 1),  # INITIAL_WINDOW_SIZE
    0x5: (2**14, 2**24 - 1),  # MAX_FRAME_SIZE
    0x8: (0, 1),  # ENABLE_CONNECT_PROTOCOL
}


def valid_upgrade_settings(value: bytes) -> bool:
    """Whether ``value`` (an HTTP2-Settings field) is a base64url SETTINGS
    payload with values in range: a server must not upgrade otherwise."""
    if not _TOKEN68.fullmatch(value):
        return False
    try:
        payload = base64.urlsafe_b64decode(value.rstrip(b"=") + b"=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return False
    if len(payload) % 6:
        return False
    for start in range(0, len(payload), 6):
        code = int.from_bytes(payload[start : start + 2], "big")
        setting = int.from_bytes(payload[start + 2 : start + 6], "big")
        low, high = _SETTING_RANGES.get(code, (0, 2**32 - 1))
        if not low <= setting <= high:
            return False
    return True


def is_preface(data: bytes) -> bool:
    """Whether ``data``, the first bytes of a connection, begin the HTTP/2
    client preface (they may hold only part of it)."""
    size = min(len(data), len(PREFACE))
    return size >= 3 and data[:size] == PREFACE[:size]


def goaway_refusal(reason: bytes = b"connection limit") -> bytes:
    """An empty SETTINGS (the server's preface) and a GOAWAY refusing every
    stream (last stream 0, REFUSED_STREAM): the client may retry elsewhere."""
    settings = (0).to_bytes(3, "big") + b"\x04\x00" + (0).to_bytes(4, "big")
    payload = (0).to_bytes(4, "big") + REFUSED_STREAM.to_bytes(4, "big") + reason
    goaway = len(payload).to_bytes(3, "big") + b"\x07\x00" + (0).to_bytes(4, "big") + payload
    return settings + goaway


def abuse_metrics() -> list[str]:
    """The HTTP/2 refusals by reason and, once websockets are served, the
    websockets closed for abuse by reason, as Prometheus text lines."""
    lines = [
        "# HELP looming_http2_abuse_total HTTP/2 streams and connections refused, by reason.",
        "# TYPE looming_http2_abuse_total counter",
    ]
    for reason in sorted({*ABUSE_REASONS, *abuse}):
        lines.append(f'looming_http2_abuse_total{{reason="{reason}"}} {abuse[reason]}')
    websocket = sys.modules.get("looming.http.websocket")  # loaded only where it serves
    if websocket is not None:
        closed: Counter[str] = websocket.abuse
        lines += [
            "# HELP looming_websocket_abuse_total Websockets closed for abuse, by reason.",
            "# TYPE looming_websocket_abuse_total counter",
        ]
        for reason in sorted(closed):
            lines.append(f'looming_websocket_abuse_total{{reason="{reason}"}} {closed[reason]}')
    return lines
