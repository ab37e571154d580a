"""A small HTTP/1.1 client over any looming Flow, built on h11.

:class:`HttpClient` keeps one h11 connection per flow, so several requests
can share a keep-alive connection; :func:`request` is the one-call form.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import h11

from looming.addresses import format_endpoint
from looming.devices.flow import Flow
from looming.errors import ConnectionReset, Malformed
from looming.http.message import ClientResponse


class HttpClient:
    """Sends requests on one flow, one after another (keep-alive)."""

    def __init__(self, flow: Flow, *, max_header_bytes: int = 64 * 1024) -> None:
        self.flow = flow
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_header_bytes)

    @property
    def reusable(self) -> bool:
        """Whether another request may be sent on this flow."""
        states = (self._conn.our_state, self._conn.their_state)
        return states in ((h11.IDLE, h11.IDLE), (h11.DONE, h11.DONE))

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes | str, bytes | str]] = (),
        body: bytes = b"",
    ) -> ClientResponse:
        """Send one request and read its whole response."""
        conn = self._conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        if conn.our_state is not h11.IDLE:
            raise ConnectionReset("this connection cannot carry another request (closed by peer)")
        header_list = [
            (
                name.encode("latin-1") if isinstance(name, str) else name,
                value.encode("latin-1") if isinstance(value, str) else value,
            )
            for name, value in headers
        ]
        names = {name.lower() for name, _ in header_list}
        if b"host" not in names:
            remote = getattr(self.flow, "remote_address", None)
            # RFC 9110 7.2: an IPv6 literal in Host is bracketed.
            host = format_endpoint(remote[0], remote[1]) if remote else "localhost"
            header_list.insert(0, (b"host", host.encode("latin-1")))
        if body and b"content-length" not in names and b"transfer-encoding" not in names:
            header_list.append((b"content-length", b"%d" % len(body)))
        try:
            out = [conn.send(h11.Request(method=method, target=target, headers=header_list))]
            if body:
                out.extend(conn.send_with_data_passthrough(h11.Data(data=body)) or [])
            out.append(conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as error:
            raise ValueError(f"cannot send this request: {error}") from error
        await self.flow.writev(out)
        return await self._read_response(method)

    async def _read_response(self, method: str) -> ClientResponse:
        conn = self._conn
        response: h11.Response | None = None
        chunks: list[bytes] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as error:
                raise Malformed(f"bad HTTP response: {error}") from error
            if event is h11.NEED_DATA:
                conn.receive_data(await self.flow.read())
                continue
            if type(event) is h11.InformationalResponse:
                continue
            if type(event) is h11.Response:
                response = event
            elif type(event) is h11.Data:
                chunks.append(bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                assert response is not None
                return ClientResponse(
                    response.status_code,
                    response.reason.decode("latin-1"),
                    list(response.headers),
                    b"".join(chunks),
                    response.http_version.decode("ascii"),
                )
            else:
                raise ConnectionReset(f"connection closed before the response to {method} ended")


_clients: weakref.WeakKeyDictionary[Flow, HttpClient] = weakref.WeakKeyDictionary()


async def request(
    flow: Flow,
    method: str,
    target: str,
    headers: Iterable[tuple[bytes | str, bytes | str]] = (),
    body: bytes = b"",
) -> ClientResponse:
    """Send one request on ``flow`` and read the response.

    Consecutive calls on the same flow reuse its HTTP connection state, so a
    keep-alive connection carries them one after another.
    """
    try:
        client = _clients.get(flow)
    except TypeError:
        client = None
    if client is None:
        client = HttpClient(flow)
        try:
            _clients[flow] = client
        except TypeError:
            pass  # flows that cannot be weakly referenced get a fresh client each time
    return await client.request(method, target, headers, body)
