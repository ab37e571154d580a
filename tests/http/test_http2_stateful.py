"""A client that opens, resets and half-finishes streams in any order
against an HTTP/2 session with a small stream limit (hypothesis stateful):
streams over the limit are refused one by one and never end the connection,
the streams the session counts (handlers running, answered streams the
client still sends on) and those h2 holds open stay within the limit, the
bodies held stay within the connection window, and at the end every stream
was answered, refused or reset by the client, and a new one is served."""

from __future__ import annotations

import asyncio

import h2.connection
import h2.errors
import h2.events
import h2.settings
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import looming.http.http2 as http2
from looming.http import Request, Response

from .test_http2_window import PipeFlow, exchange, start

LIMIT = 3


class Handler:
    """``/hold`` waits until released; ``/now`` answers at once, the body unread."""

    streams_request_body = True

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, request: Request) -> Response:
        if request.path == "/hold":
            await self.release.wait()
        return Response(200, (), request.path.encode())


def fields(path: str, method: str) -> list[tuple[str, str]]:
    return [(":method", method), (":path", path), (":scheme", "http"), (":authority", "x")]


class StreamsAgainstTheLimit(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.saved = (http2.MAX_CONCURRENT_STREAMS, http2.MAX_RESETS)
        http2.MAX_CONCURRENT_STREAMS, http2.MAX_RESETS = LIMIT, 10**6
        self.loop = asyncio.new_event_loop()
        self.handler = Handler()
        self.flow: PipeFlow
        self.flow, self.session, self.conn = start(self.handler)
        self.serving = self.loop.create_task(self.session.run(b""))
        self.next_id = 1
        self.sending: set[int] = set()  # streams whose body the client still sends
        self.outcome: dict[int, str] = {}  # "answered", "refused", "reset by client"
        self.opened: list[int] = []
        self.goaways: list[int] = []
        self.step()

    def step(self) -> None:
        for event in self.loop.run_until_complete(exchange(self.flow, self.conn)):
            if isinstance(event, h2.events.StreamEnded):
                self.outcome.setdefault(event.stream_id, "answered")
            elif isinstance(event, h2.events.StreamReset):
                assert event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                assert event.stream_id not in self.outcome
                self.outcome[event.stream_id] = "refused"
                self.sending.discard(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaways.append(event.error_code)
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        # The client ignores the advertised limit (it is what is tested).
        window = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: http2.STREAM_WINDOW}
        self.conn.remote_settings = h2.settings.Settings(client=False, initial_values=window)

    @rule(path=st.sampled_from(["/hold", "/now"]), with_body=st.booleans())
    def open_stream(self, path: str, with_body: bool) -> None:
        stream_id, self.next_id = self.next_id, self.next_id + 2
        self.conn.send_headers(stream_id, fields(path, "POST"), end_stream=not with_body)
        if with_body:
            self.conn.send_data(stream_id, b"part of a body")
            self.sending.add(stream_id)
        self.opened.append(stream_id)
        self.step()

    def open_ones(self) -> list[int]:
        return [s for s in self.opened if s not in self.outcome]

    @precondition(lambda self: self.open_ones())
    @rule(data=st.data())
    def reset_stream(self, data: st.DataObject) -> None:
        stream_id = data.draw(st.sampled_from(self.open_ones()))
        self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self.outcome[stream_id] = "reset by client"
        self.sending.discard(stream_id)
        self.step()

    @precondition(lambda self: self.sending)
    @rule(data=st.data())
    def end_body(self, data: st.DataObject) -> None:
        stream_id = data.draw(st.sampled_from(sorted(self.sending)))
        self.sending.discard(stream_id)
        self.conn.end_stream(stream_id)
        self.step()

    @rule()
    def release_the_held(self) -> None:
        self.handler.release.set()
        self.step()
        self.handler.release = asyncio.Event()

    @invariant()
    def within_the_limits(self) -> None:
        assert self.goaways == []
        assert len(self.session.tasks) + len(self.session.draining) <= LIMIT
        assert self.session.conn.open_inbound_streams <= LIMIT
        assert self.session.held <= http2.CONNECTION_WINDOW

    def teardown(self) -> None:
        try:
            self.handler.release.set()
            for stream_id in sorted(self.sending):
                self.conn.end_stream(stream_id)
            self.sending.clear()
            for _ in range(3):
                self.step()
            assert not self.open_ones(), (self.opened, self.outcome)
            self.open_stream("/now", with_body=False)  # the connection still serves
            assert self.outcome[self.opened[-1]] == "answered"
            assert self.goaways == []
        finally:
            self.serving.cancel()
            self.loop.run_until_complete(asyncio.gather(self.serving, return_exceptions=True))
            self.loop.close()
            http2.MAX_CONCURRENT_STREAMS, http2.MAX_RESETS = self.saved


StreamsAgainstTheLimit.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
test_streams_against_the_limit = StreamsAgainstTheLimit.TestCase
