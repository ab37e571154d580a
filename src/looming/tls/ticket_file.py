"""Session-ticket keys shared through a file, so several servers resume each other's sessions.

The file holds one or more 48-byte keys (make one with ``openssl rand 48``);
the first seals new tickets, all of them open tickets. To rotate without
breaking resumption, an operator prepends a new key and drops the oldest,
everywhere at once; servers reload the file when it changes
(:func:`watch_ticket_key_file`). The file is a secret: whoever reads it can
decrypt the tickets' resumption secrets, so it should be readable by the
servers' user only.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from looming.devices.random import Random
from looming.errors import UsageError

from .session import TicketKeys

log = logging.getLogger("looming.tls")


def load_ticket_key_file(path: str | Path, random: Random) -> TicketKeys:
    """TicketKeys from ``path``; a clear UsageError when it cannot be used."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the ticket key file {path}: {exc.strerror}") from exc
    try:
        return TicketKeys.from_bytes(data, random)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from exc


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


async def watch_ticket_key_file(path: str | Path, keys: TicketKeys, interval_s: float) -> None:
    """Reload ``keys`` from ``path`` whenever the file changes, until cancelled.

    A file that disappears or becomes unusable is logged and the keys in use
    are kept, so a botched rotation does not stop the server.
    """
    target = Path(path)
    # None: the first check reloads, covering a change since the keys were loaded.
    seen: tuple[int, int] | None = None
    while True:
        await asyncio.sleep(interval_s)
        stamp = _stamp(target)
        if stamp == seen or stamp is None:
            continue
        seen = stamp
        before = keys.names
        try:
            keys.load(target.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("ticket key file %s not reloaded, keeping the keys in use: %s", path, exc)
            continue
        if keys.names != before:
            log.info("ticket keys reloaded from %s (%d keys)", path, len(keys.names))
