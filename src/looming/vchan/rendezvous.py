"""The rendezvous messages exchanged over the registry's Unix socket.

The server offers the channel in one message whose ancillary data carries,
with ``SCM_RIGHTS``, the shared segment's descriptor, the descriptor the
client waits on and the one it kicks. The client maps and validates the
segment, marks itself connected in the header and answers with an
acknowledgement (or a refusal saying why). The socket then stays open for
the life of the channel: when either process dies, the kernel closes its
end and the other side sees end-of-file, which is how a peer killed without
the chance to clear its liveness byte is noticed.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from dataclasses import dataclass

from looming.vchan.errors import VchanError
from looming.vchan.notify import EVENTFD, PIPE

MAGIC_OFFER = b"LVCH"
MAGIC_ACCEPT = b"LVOK"
MAGIC_REFUSE = b"LVNO"
VERSION = 1
_OFFER = struct.Struct("=4sBBHII")
_ACCEPT = struct.Struct("=4sI")
_KINDS = {EVENTFD: 0, PIPE: 1}
_KIND_NAMES = {v: k for k, v in _KINDS.items()}
FD_COUNT = 3
MAX_MESSAGE = 512


@dataclass(slots=True)
class Offer:
    """What the server hands the client."""

    kind: str
    segment_size: int
    server_pid: int
    segment_fd: int
    wait_fd: int
    kick_fd: int

    def close_fds(self) -> None:
        for fd in (self.segment_fd, self.wait_fd, self.kick_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def send_offer(
    sock: socket.socket, kind: str, segment_size: int, segment_fd: int, wait_fd: int, kick_fd: int
) -> None:
    """Send the offer; it is small enough never to block on a fresh socket."""
    payload = _OFFER.pack(MAGIC_OFFER, VERSION, _KINDS[kind], 0, segment_size, os.getpid())
    fds = array.array("i", [segment_fd, wait_fd, kick_fd])
    sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])


def receive_offer(sock: socket.socket) -> Offer:
    """Read the offer (the socket must be readable). Raises :class:`VchanError`."""
    fd_bytes = array.array("i").itemsize * FD_COUNT
    # Close-on-exec, like every descriptor Python makes: a unikernel that runs
    # a program must not hand it our shared segment or events.
    data, ancillary, flags, _ = sock.recvmsg(
        MAX_MESSAGE, socket.CMSG_SPACE(fd_bytes), socket.MSG_CMSG_CLOEXEC
    )
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % fds.itemsize
            fds.frombytes(payload[:usable])
    try:
        if not data:
            raise VchanError("the vchan server closed the connection before offering a channel")
        if flags & socket.MSG_CTRUNC:
            raise VchanError("the vchan server sent more descriptors than expected")
        if len(data) != _OFFER.size or len(fds) != FD_COUNT:
            raise VchanError(
                f"malformed vchan offer ({len(data)} bytes, {len(fds)} descriptors); "
                "is another program listening on this registry socket?"
            )
        magic, version, kind, _, size, pid = _OFFER.unpack(data)
        if magic != MAGIC_OFFER or version != VERSION or kind not in _KIND_NAMES:
            raise VchanError(
                f"unknown vchan offer (magic {magic!r}, version {version}, notifier {kind})"
            )
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return Offer(_KIND_NAMES[kind], size, pid, fds[0], fds[1], fds[2])


def accept_message() -> bytes:
    return _ACCEPT.pack(MAGIC_ACCEPT, os.getpid())


def refuse_message(reason: str) -> bytes:
    return MAGIC_REFUSE + reason.encode("utf-8", "replace")[: MAX_MESSAGE - 4]


def parse_answer(data: bytes) -> int:
    """The client's pid from its answer; raises :class:`VchanError` on refusal."""
    if len(data) == _ACCEPT.size and data.startswith(MAGIC_ACCEPT):
        return int(_ACCEPT.unpack(data)[1])
    if data.startswith(MAGIC_REFUSE):
        reason = data[4:].decode("utf-8", "replace")
        raise VchanError(f"the vchan client refused the channel: {reason}")
    if not data:
        raise VchanError("the vchan client went away during rendezvous")
    raise VchanError(f"malformed answer from the vchan client ({len(data)} bytes)")
