"""``looming store serve``: the store over HTTP.

* Git's smart HTTP protocol at the root, so ``git clone http://host:port/``
  and ``git push`` work (dulwich's handlers speak the protocol; this module
  runs them behind looming's HTTP server).
* A JSON API under ``/api/<branch>/``:

  ``GET  get/<path>``      the raw value (404 when absent)
  ``PUT  set/<path>``      store the request body (``?message=``), one commit
  ``DELETE set/<path>``    remove the key or directory
  ``GET  list/<path>``     ``[{"name":..., "kind": "contents"|"node"}]``
  ``GET  history``         ``[{"id", "parents", "message", "time"}]`` (``?limit=``)
  ``POST merge?from=B``    merge branch B in; 409 with the conflicts when any
  ``GET  watch``           server-sent events, one per change (``?prefix=``)
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

from looming.errors import KeyNotFound, LoomingError
from looming.http.message import Request, Response
from looming.store.gitbackend import GitBackend
from looming.store.merge import ABSENT
from looming.store.repo import Repo
from looming.store.treemerge import Directory

JSON_TYPE = (b"content-type", b"application/json")


def _json(status: int, value: Any) -> Response:
    return Response(status, [JSON_TYPE], json.dumps(value).encode() + b"\n")


def _show(value: Any) -> Any:
    if value is ABSENT:
        return None
    if isinstance(value, Directory):
        return {"directory": value.tree_id}
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": __import__("base64").b64encode(value).decode()}
    return value


class StoreHttp:
    """An HTTP handler (for :class:`looming.http.HttpServer`) serving one repository."""

    def __init__(self, repo: Repo) -> None:
        if not isinstance(repo.backend, GitBackend):
            raise LoomingError("serve needs an on-disk repository")
        self.repo = repo
        from dulwich.repo import Repo as DulwichRepo
        from dulwich.server import DictBackend
        from dulwich.web import make_wsgi_chain

        self.bad_git_requests = 0
        self._git = DulwichRepo(repo.backend.git_dir)
        repos: dict[str, Any] = {"/": self._git}
        self._wsgi = make_wsgi_chain(DictBackend(repos))

    def close(self) -> None:
        self._git.close()

    async def __call__(self, request: Request) -> Response:
        path = urllib.parse.unquote(request.path)
        try:
            if path.startswith("/api/"):
                return await self._api(request, path[len("/api/") :])
            try:
                return await asyncio.to_thread(self._git_http, request)
            except (LoomingError, KeyError):
                raise
            except Exception as error:  # a peer's bad Git request: counted and refused
                self.bad_git_requests += 1
                return Response(
                    400, [(b"content-type", b"text/plain")], f"bad Git request: {error}\n".encode()
                )
        except KeyNotFound as error:
            return _json(404, {"error": str(error)})
        except LoomingError as error:
            return _json(400, {"error": str(error)})

    # -------------------------------------------------------------- git smart HTTP

    def _git_http(self, request: Request) -> Response:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "PATH_INFO": urllib.parse.unquote(request.path),
            "QUERY_STRING": request.query,
            "SERVER_NAME": "looming",
            "SERVER_PORT": "0",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": io.StringIO(),
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(request.body)),
        }
        for name, value in request.headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value.decode("latin-1")
            elif key != "CONTENT_LENGTH":
                environ["HTTP_" + key] = value.decode("latin-1")
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            started[:] = [status, headers]
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        result = self._wsgi(environ, start_response)
        try:
            for chunk in result:
                chunks.append(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status_text, headers = started
        response_headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers
            if name.lower() not in ("content-length", "transfer-encoding")
        ]
        return Response(int(status_text.split()[0]), response_headers, b"".join(chunks))

    # -------------------------------------------------------------- JSON API

    async def _api(self, request: Request, rest: str) -> Response:
        branch, _, action = rest.partition("/")
        verb, _, key = action.partition("/")
        query = urllib.parse.parse_qs(request.query)
        store = self.repo.store(branch)
        method = request.method
        if verb == "get" and method == "GET":
            data = await asyncio.to_thread(store.get, key)
            return Response(200, [(b"content-type", b"application/octet-stream")], data)
        if verb == "set" and method == "PUT":
            message = query.get("message", [None])[0]
            commit = await asyncio.to_thread(store.set, key, request.body, message)
            return _json(200, {"commit": commit})
        if verb == "set" and method == "DELETE":
            removed = await asyncio.to_thread(store.remove, key, query.get("message", [None])[0])
            return _json(200, {"commit": removed})
        if verb == "list" and method == "GET":
            if key and store.kind(key) is None:
                raise KeyNotFound(key)
            names = await asyncio.to_thread(store.list, key)
            return _json(200, [{"name": name, "kind": kind.value} for name, kind in names])
        if verb == "history" and method == "GET":
            limit_text = query.get("limit", ["100"])[0]
            if not limit_text.isdigit():
                return _json(400, {"error": f"limit must be a whole number, not {limit_text!r}"})
            limit = int(limit_text)
            history = await asyncio.to_thread(store.history, limit)
            return _json(
                200,
                [
                    {"id": c.id, "parents": list(c.parents), "message": c.message, "time": c.time}
                    for c in history
                ],
            )
        if verb == "merge" and method == "POST":
            other = query.get("from", [""])[0]
            if not other:
                return _json(400, {"error": "say which branch to merge with ?from=BRANCH"})
            result = await asyncio.to_thread(store.merge, other)
            if result.conflicts:
                return _json(
                    409,
                    {
                        "conflicts": [
                            {
                                "path": "/".join(c.path),
                                "base": _show(c.base),
                                "ours": _show(c.ours),
                                "theirs": _show(c.theirs),
                                "why": c.why,
                            }
                            for c in result.conflicts
                        ]
                    },
                )
            return _json(200, {"commit": result.commit, "fast_forward": result.fast_forward})
        if verb == "watch" and method == "GET":
            prefix = query.get("prefix", [""])[0]
            return Response(
                200,
                [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
                self._events(store, prefix),
            )
        return _json(404, {"error": f"no API {method} {verb!r}; see looming.store.http"})

    async def _events(self, store: Any, prefix: str) -> AsyncIterator[bytes]:
        # Watch before the first byte goes out: a client that sees the
        # opening comment may update at once and must not miss that change.
        events = store.events(prefix)
        events.start()
        try:
            yield b": watching\n\n"
            async for event in events:
                payload = {
                    "old": event.old,
                    "new": event.new,
                    "paths": ["/".join(path) for path in event.paths],
                }
                yield b"event: change\ndata: " + json.dumps(payload).encode() + b"\n\n"
        finally:
            await events.aclose()


async def serve(repo: Repo, host: str, port: int) -> tuple[Any, StoreHttp]:
    """Start serving; the listener (``.port``, ``await .close()``) and the handler."""
    from looming.http.server import HttpServer
    from looming.unix.socket_stack import SocketTcp

    handler = StoreHttp(repo)
    tcp = SocketTcp(host)
    listener = await tcp.listen(port, HttpServer(handler))
    return listener, handler


def serve_forever(repo: Repo, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then close the repository (which
    leaves what this process wrote as one compact pack)."""

    async def main() -> None:
        listener, _handler = await serve(repo, host, port)
        print(
            f"serving {repo.path} on http://{host}:{listener.port}/ (JSON API under /api/)",
            flush=True,
        )
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
