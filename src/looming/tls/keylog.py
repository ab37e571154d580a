"""Key logging in the NSS ``SSLKEYLOGFILE`` format, for Wireshark and tshark.

Off unless asked for: :attr:`TlsConfig.key_log` is a callable given each
line (without its newline); :class:`KeyLogFile` appends them to a file
(created readable by its owner only), as OpenSSL, NSS and curl do when
``SSLKEYLOGFILE`` is set. Whoever holds the file can decrypt every logged
connection: use it to debug, never in production.

Lines are ``LABEL <client random, hex> <secret, hex>``: TLS 1.3 logs
CLIENT_EARLY_TRAFFIC_SECRET, CLIENT/SERVER_HANDSHAKE_TRAFFIC_SECRET,
CLIENT/SERVER_TRAFFIC_SECRET_0 and EXPORTER_SECRET; TLS 1.2 logs
CLIENT_RANDOM with the master secret.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from looming.errors import UsageError

# TLS 1.3 Derive-Secret labels (RFC 8446 section 7.1) and their key log names.
LABELS_13: dict[bytes, str] = {
    b"c e traffic": "CLIENT_EARLY_TRAFFIC_SECRET",
    b"c hs traffic": "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    b"s hs traffic": "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    b"c ap traffic": "CLIENT_TRAFFIC_SECRET_0",
    b"s ap traffic": "SERVER_TRAFFIC_SECRET_0",
    b"exp master": "EXPORTER_SECRET",
}


def key_log_line(label: str, client_random: bytes, secret: bytes) -> str:
    return f"{label} {client_random.hex()} {secret.hex()}"


class KeyLogFile:
    """Appends key log lines to ``path``; one write per line, so processes may share it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UsageError(f"cannot open the key log file {path}: {exc.strerror}") from exc
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            os.write(self._fd, (line + "\n").encode("ascii"))

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
