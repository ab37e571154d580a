"""``looming store serve``: the store over HTTP.

* Git's smart HTTP protocol at the root, so ``git clone http://host:port/``
  and ``git push`` work (dulwich's handlers speak the protocol; this module
  runs them behind looming's HTTP server; :mod:`looming.store.receive`
  decides what a push may change).
* A JSON API under ``/api/<branch>/``:

  ``GET  get/<key>``       the raw value (404 when absent)
  ``PUT  set/<key>``       store the request body (``?message=``), one commit
  ``DELETE set/<key>``     remove the key or directory
  ``GET  list/<key>``      ``[{"name":..., "kind": "contents"|"node"}]``
  ``GET  history``         ``[{"id", "parents", "message", "time"}]`` (``?limit=``)
  ``POST merge?from=B``    merge branch B in; 409 with the conflicts when any,
                           which leaves a pending merge (:mod:`looming.store.pending`)
  ``GET  merge``           the pending merge: conflicts with base, ours, theirs
  ``POST resolve``         JSON ``{"key": K, "side": "ours"|"theirs"}`` or
                           ``{"key": K, "value": TEXT}`` (or ``"base64"``)
  ``POST merge/continue``  commit the resolved merge
  ``POST merge/abort``     forget it
  ``GET  watch``           server-sent events, one per change (``?prefix=``)

A branch name with ``/`` is written with ``%2F`` (``/api/scratch%2Fx/get/a``).

Every request is checked against an :class:`~looming.store.auth.AccessPolicy`
(HTTP Basic, the token as password): 401 without the credentials a request
needs, 403 when they do not allow it, 400 for bad names, JSON or parameters,
413 for a body over :attr:`ServeSettings.max_body_bytes`. A push's body is
written to an unnamed temporary file in the repository as it arrives, so
the server never holds a pack whole; other bodies (a PUT's value, a fetch's
negotiation) are read into memory. Bodies are read only once the request's
credentials are checked.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import signal
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from looming.errors import KeyNotFound, LoomingError
from looming.http.message import ClientGone, Request, Response
from looming.store import pending
from looming.store.auth import ENABLE_WRITES, AccessPolicy, Client, describe
from looming.store.gitbackend import GitBackend
from looming.store.githttp import (
    DRAIN_BYTES,
    BodyTooLarge,
    WsgiRun,
    git_app,
    plain_body,
    spooled_body,
    whole_body,
    wsgi_environ,
)
from looming.store.names import check_branch, check_key
from looming.store.path import show_path
from looming.store.quarantine import reclaim
from looming.store.receive import Receiver, current_branch, deny_current_branch
from looming.store.repo import Repo
from looming.store.store import Store

JSON_TYPE = (b"content-type", b"application/json")
TEXT_TYPE = (b"content-type", b"text/plain; charset=utf-8")


@dataclass(frozen=True)
class ServeSettings:
    """Limits of a served store."""

    max_body_bytes: int = 256 * 1024 * 1024
    """A request body (a push's pack, a PUT value) above this gets 413. A
    push's pack goes to a temporary file in the repository (this bounds the
    disk it takes); any other body is held in memory while it runs."""
    watch_heartbeat_s: float = 1.0
    """How often an idle ``watch`` stream sends a comment line, so a client
    that went away is noticed (its thread and files released) within about
    two of these."""
    tls_handshake_timeout_s: float = 10.0


def _json(status: int, value: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
    return Response(status, [JSON_TYPE, *headers], json.dumps(value).encode() + b"\n")


class Denied(Exception):
    """A request its client may not make: 401 (no credentials) or 403."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BadRequest(LoomingError):
    """A request the API cannot take; the message says what to send instead."""


def _conflicts_json(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "path": c["key"],
            "why": c["why"],
            **{side: _plain(c[side]) for side in ("base", "ours", "theirs")},
        }
        for c in records
    ]


def _plain(side: dict[str, Any]) -> Any:
    """A side as the API shows it: the text, null when absent, else the object."""
    if side.get("absent"):
        return None
    if "text" in side:
        return side["text"]
    return side


class StoreHttp:
    """An HTTP handler (for :class:`looming.http.HttpServer`) serving one repository."""

    streams_request_body = True  # bodies are read here, after the credentials

    def __init__(
        self,
        repo: Repo,
        policy: AccessPolicy | None = None,
        settings: ServeSettings | None = None,
    ) -> None:
        if not isinstance(repo.backend, GitBackend):
            raise LoomingError("serve needs an on-disk repository")
        self.repo = repo
        self.policy = policy if policy is not None else AccessPolicy()
        self.settings = settings if settings is not None else ServeSettings()
        from dulwich.repo import Repo as DulwichRepo

        self.bad_git_requests = 0
        self.denied = 0
        self._git_dir = repo.backend.git_dir
        self._git = DulwichRepo(self._git_dir)
        self.reclaimed = reclaim(repo.backend.objects_dir, repo.clock.now())
        self.last_receive: Receiver | None = None

    def close(self) -> None:
        self._git.close()

    # -------------------------------------------------------------- entry

    async def __call__(self, request: Request) -> Response:
        client = self.policy.identify(request.header(b"authorization"))
        path = urllib.parse.unquote(request.path)
        try:
            if client is None and self.policy.token is None:
                raise Denied(403, ENABLE_WRITES)
            if client is None:
                raise Denied(401, "wrong credentials: send the store's token as the password")
            if request.path.startswith("/api/"):
                request.body = await whole_body(request, self.settings.max_body_bytes)
                return await self._api(request, client, request.path[len("/api/") :])
            return await self._git_request(request, client, path)
        except (BodyTooLarge, ClientGone) as error:
            return self._unread_body(request, error)
        except Denied as denied:
            self.denied += 1
            headers: tuple[tuple[bytes, bytes], ...] = ()
            if denied.status == 401:
                realm = self.policy.realm.encode()
                headers = ((b"www-authenticate", b'Basic realm="' + realm + b'"'),)
            return _json(denied.status, {"error": denied.reason}, headers)
        except KeyNotFound as error:
            return _json(404, {"error": str(error)})
        except LoomingError as error:
            return _json(400, {"error": str(error)})

    def _unread_body(self, request: Request, error: Exception) -> Response:
        """413 for a body over the limit (as the server's own reader may
        find it), else 400 for one that broke off (a client that left)."""
        self.bad_git_requests += not request.path.startswith("/api/")
        received = getattr(request.body_stream, "received", 0)
        if isinstance(error, BodyTooLarge) or received > self.settings.max_body_bytes:
            limit = self.settings.max_body_bytes
            return Response(
                413,
                [TEXT_TYPE],
                f"{error}: the body is over the limit of {limit} bytes; the server's "
                "max_body_bytes (`looming store serve --max-body-bytes`) sets it\n".encode(),
            )
        return Response(400, [TEXT_TYPE], f"the request body broke off: {error}\n".encode())

    def _checked_out(self, branch: str) -> bool:
        return branch == current_branch(self.repo) and deny_current_branch(self._git)

    def _require(self, client: Client, branch: str, permission: str) -> None:
        if not self.policy.allows(client, branch, permission):
            reason = self.policy.refusal(client, branch, permission)
            unauthenticated = not client.authenticated and self.policy.token is not None
            raise Denied(401 if unauthenticated else 403, reason)

    # -------------------------------------------------------------- git smart HTTP

    async def _git_request(self, request: Request, client: Client, path: str) -> Response:
        service = urllib.parse.parse_qs(request.query).get("service", [""])[0]
        pushing = service == "git-receive-pack" or path.rstrip("/").endswith("/git-receive-pack")
        receiver = None
        if pushing:
            if not client.authenticated:
                self._require(client, "*", "write")
            receiver = Receiver(
                self.repo, self._git, self.policy, client, self.settings.max_body_bytes
            )
        elif not self.policy.allows_all(client, self.repo.branches(), "read"):
            self._require(client, "*", "read")  # raises: some branch is not readable
            raise Denied(403, "this client may not read every branch, and a clone reads them all")
        limit = self.settings.max_body_bytes
        spooled: Any = None
        try:
            if receiver is not None and request.method == "POST":
                # A push's pack: to a file as it arrives, never whole in memory.
                spooled = await spooled_body(request, self._git_dir, limit)
                body: bytes | tuple[Any, int] = spooled
            else:
                request.body = await whole_body(request, limit)
                body = plain_body(request, limit)
            run = WsgiRun(git_app(self._git, receiver), wsgi_environ(request, body))
            # A push's answer is small and its status depends on the report;
            # a clone's may be large and is sent as it is made.
            response = await (run.whole() if receiver is not None else run.streamed())
        except (BodyTooLarge, ClientGone):
            raise  # answered by __call__
        except (LoomingError, KeyError, ImportError, MemoryError):
            raise  # ours, not the peer's: answered as a server error
        except Exception as error:  # a peer's bad Git request: counted and refused
            self.bad_git_requests += 1
            return Response(400, [TEXT_TYPE], f"bad Git request: {error}\n".encode())
        finally:
            if spooled is not None:
                spooled[0].close()
        if receiver is not None:
            self.last_receive = receiver
            if receiver.report.unpack_error is not None:
                self.bad_git_requests += 1
                reason = f"push refused, nothing changed: {receiver.report.unpack_error}\n"
                return Response(400, [TEXT_TYPE], reason.encode())
        return response

    # -------------------------------------------------------------- JSON API

    async def _api(self, request: Request, client: Client, rest: str) -> Response:
        # Split before decoding, so a branch with a slash comes as %2F:
        # /api/scratch%2Fx/get/a.
        raw_branch, _, action = rest.partition("/")
        branch = check_branch(urllib.parse.unquote(raw_branch))
        verb, _, raw_key = action.partition("/")
        key = urllib.parse.unquote(raw_key)
        route = _ROUTES.get((request.method, verb))
        if route is None:
            return _json(
                404, {"error": f"no API {request.method} {verb!r}; see looming.store.http"}
            )
        permission, method = route
        self._require(client, branch, permission)
        if permission == "write" and self._checked_out(branch):
            return _json(
                409,
                {
                    "error": f"branch {branch!r} is checked out in this non-bare repository: "
                    "a write here would not reach its work tree (git refuses pushes to it "
                    "too; set receive.denyCurrentBranch=ignore in its config to allow them)"
                },
            )
        query = {name: values[0] for name, values in urllib.parse.parse_qs(request.query).items()}
        return await method(self, _Call(self.repo.store(branch), request, key, query, client))

    async def _get(self, call: _Call) -> Response:
        data = await asyncio.to_thread(call.store.get, check_key(call.key))
        return Response(200, [(b"content-type", b"application/octet-stream")], data)

    async def _set(self, call: _Call) -> Response:
        names = check_key(call.key)
        message = call.query.get("message")
        commit = await asyncio.to_thread(call.store.set, names, call.request.body, message)
        return _json(200, {"commit": commit})

    async def _remove(self, call: _Call) -> Response:
        names = check_key(call.key)
        commit = await asyncio.to_thread(call.store.remove, names, call.query.get("message"))
        return _json(200, {"commit": commit})

    async def _list(self, call: _Call) -> Response:
        names = check_key(call.key)
        if names and call.store.kind(names) is None:
            raise KeyNotFound(show_path(names))
        listed = await asyncio.to_thread(call.store.list, names)
        return _json(200, [{"name": name, "kind": kind.value} for name, kind in listed])

    async def _history(self, call: _Call) -> Response:
        limit_text = call.query.get("limit", "100")
        if not limit_text.isdigit():
            raise BadRequest(f"limit must be a whole number, not {limit_text!r}")
        history = await asyncio.to_thread(call.store.history, int(limit_text))
        return _json(
            200,
            [
                {"id": c.id, "parents": list(c.parents), "message": c.message, "time": c.time}
                for c in history
            ],
        )

    async def _merge(self, call: _Call) -> Response:
        other = call.query.get("from", "")
        if not other:
            raise BadRequest("say which branch to merge with ?from=BRANCH")
        if len(other) != 40:
            self._require(call.client, check_branch(other), "read")
        result = await asyncio.to_thread(
            pending.start_merge, call.store, other, call.query.get("message")
        )
        if result.conflicts:
            record = pending.load(self.repo, call.branch)
            assert record is not None
            return _json(409, {"conflicts": _conflicts_json(record.conflicts), "pending": True})
        return _json(200, {"commit": result.commit, "fast_forward": result.fast_forward})

    async def _merge_status(self, call: _Call) -> Response:
        record = pending.load(self.repo, call.branch)
        if record is None:
            return _json(404, {"error": f"no merge is pending on {call.branch!r}"})
        status = record.status()
        status["conflicts"] = _conflicts_json(record.conflicts)
        return _json(200, status)

    async def _merge_step(self, call: _Call) -> Response:
        if call.key == "continue":
            commit = await asyncio.to_thread(pending.continue_merge, call.store)
            return _json(200, {"commit": commit})
        if call.key == "abort":
            await asyncio.to_thread(pending.abort_merge, self.repo, call.branch)
            return _json(200, {"aborted": True})
        raise BadRequest(f"POST merge/continue or merge/abort, not merge/{call.key}")

    async def _resolve(self, call: _Call) -> Response:
        try:
            body = json.loads(call.request.body)
        except (ValueError, UnicodeDecodeError) as error:
            raise BadRequest(f"the body is not JSON: {error}") from None
        if not isinstance(body, dict) or not isinstance(body.get("key"), str):
            raise BadRequest('send {"key": K, "side": "ours"|"theirs"} or {"key": K, "value": V}')
        value: bytes | None = None
        if isinstance(body.get("value"), str):
            value = body["value"].encode("utf-8")
        elif isinstance(body.get("base64"), str):
            try:
                value = base64.b64decode(body["base64"], validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("base64 holds characters that are not base64") from None
        side = body.get("side")
        if side is not None and not isinstance(side, str):
            raise BadRequest('side is "ours" or "theirs"')
        record = await asyncio.to_thread(
            pending.resolve, self.repo, call.branch, body["key"], value=value, side=side
        )
        return _json(200, {"unresolved": record.unresolved})

    async def _watch(self, call: _Call) -> Response:
        prefix = check_key(call.query.get("prefix", ""))
        return Response(
            200,
            [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            self._events(call.store, prefix),
        )

    async def _events(self, store: Store, prefix: tuple[str, ...]) -> AsyncIterator[bytes]:
        # Watch before the first byte goes out: a client that sees the
        # opening comment may update at once and must not miss that change.
        # While idle, a comment goes out each heartbeat: writing to a client
        # that left fails, which ends this generator and stops the watch.
        events = store.events(prefix)
        events.start()
        heartbeat = self.settings.watch_heartbeat_s
        try:
            yield b": watching\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(events.__anext__(), heartbeat)
                except TimeoutError:
                    yield b":\n\n"
                    continue
                payload = {
                    "old": event.old,
                    "new": event.new,
                    "paths": ["/".join(path) for path in event.paths],
                }
                yield b"event: change\ndata: " + json.dumps(payload).encode() + b"\n\n"
        finally:
            await events.aclose()


@dataclass
class _Call:
    store: Store
    request: Request
    key: str
    query: dict[str, str]
    client: Client

    @property
    def branch(self) -> str:
        assert self.store.branch is not None
        return self.store.branch


_Method = Callable[[StoreHttp, _Call], Awaitable[Response]]
_ROUTES: dict[tuple[str, str], tuple[str, _Method]] = {
    ("GET", "get"): ("read", StoreHttp._get),
    ("PUT", "set"): ("write", StoreHttp._set),
    ("DELETE", "set"): ("write", StoreHttp._remove),
    ("GET", "list"): ("read", StoreHttp._list),
    ("GET", "history"): ("read", StoreHttp._history),
    ("POST", "merge"): ("write", StoreHttp._merge),
    ("GET", "merge"): ("read", StoreHttp._merge_status),
    ("POST", "resolve"): ("write", StoreHttp._resolve),
    ("GET", "watch"): ("read", StoreHttp._watch),
}


async def _dispatch_merge(handler: StoreHttp, call: _Call) -> Response:
    if call.key:
        return await handler._merge_step(call)
    return await handler._merge(call)


_ROUTES[("POST", "merge")] = ("write", _dispatch_merge)


# ------------------------------------------------------------------ serving


def _tls_config(cert: str, key: str, clock: Any) -> Any:
    from looming.extras import require

    require("tls", "serving the store over TLS (--cert, --key)")
    from looming.tls import CertifiedKey, TlsConfig
    from looming.unix import host_devices

    try:
        certified = CertifiedKey.from_pem_files(cert, key)
    except (OSError, ValueError, LoomingError) as error:
        raise LoomingError(f"cannot use --cert {cert} --key {key}: {error}") from None
    return TlsConfig(
        certificates=[certified],
        alpn_protocols=[b"http/1.1"],
        random=host_devices().random,
        clock=clock,
    )


async def serve(
    repo: Repo,
    host: str,
    port: int,
    *,
    policy: AccessPolicy | None = None,
    settings: ServeSettings | None = None,
    tls: Any = None,
) -> tuple[Any, StoreHttp]:
    """Start serving; the listener (``.port``, ``await .close()``) and the handler.
    ``tls`` is a :class:`looming.tls.TlsConfig` to serve HTTPS."""
    from looming.http.server import HttpServer, ServerConfig
    from looming.unix.socket_stack import SocketTcp

    handler = StoreHttp(repo, policy, settings)
    # Room past the limit to read a refused body to its end (DRAIN_BYTES),
    # so that its client hears the 413; the handler enforces the limit.
    config = ServerConfig(max_body_bytes=handler.settings.max_body_bytes + DRAIN_BYTES)
    server = HttpServer(handler, config, clock=repo.clock)
    tcp = SocketTcp(host)
    if tls is None:
        listener = await tcp.listen(port, server)
    else:
        listener = await tcp.listen(port, _tls_serving(server, tls, handler.settings))
    return listener, handler


def _tls_serving(server: Any, config: Any, settings: ServeSettings) -> Any:
    from looming.tls import tls_server

    async def serve_flow(flow: Any) -> None:
        try:
            secure = await tls_server(flow, config, settings.tls_handshake_timeout_s)
        except LoomingError:  # a failed handshake: the peer is told by alert
            await flow.close()
            return
        await server.serve_flow(secure)

    return serve_flow


def serve_forever(
    repo: Repo,
    host: str,
    port: int,
    *,
    policy: AccessPolicy | None = None,
    settings: ServeSettings | None = None,
    cert: str | None = None,
    key: str | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then close the repository (which
    leaves what this process wrote as one compact pack)."""
    if (cert is None) != (key is None):
        raise LoomingError("give both --cert and --key to serve HTTPS")
    tls = _tls_config(cert, key, repo.clock) if cert is not None and key is not None else None
    scheme = "https" if tls is not None else "http"
    access = policy if policy is not None else AccessPolicy()

    from looming.addresses import url

    async def main() -> None:
        listener, _handler = await serve(
            repo, host, port, policy=access, settings=settings, tls=tls
        )
        print(
            f"serving {repo.path} on {url(scheme, host, listener.port)} (JSON API under /api/)",
            flush=True,
        )
        print(f"access: {describe(access)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await listener.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        repo.close()
