"""The ``tls`` device: a Stack whose TCP connections are TLS.

``tls(stack(...), kv_ro("tls"))`` in config.py gives the application a
:class:`looming.devices.Stack` that looks like any other: ``tcp.listen``
hands the handler flows that already completed a TLS server handshake,
``tcp.connect`` returns flows that completed a client handshake. The
certificate, its key and the CA certificates come from a key-value store
(crunched into the artifact on the unix target), so an application serves
HTTPS without a line of TLS code.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from cryptography import x509

from looming.devices import Clock, KvRo, Listener, Random, Stack, Tcp, TcpFlow, Udp
from looming.devices.stack import TcpHandler
from looming.errors import (
    ConnectionTimeout,
    DeviceError,
    KeyNotFound,
    NetworkError,
    UsageError,
)

from .certs import CertifiedKey, TrustStore
from .config import TlsConfig
from .engine import TlsConnection
from .flow import TlsFlow
from .keyload import load_identity, read_key_password

# A handshake that fails for any network or TLS reason ends that connection only.
HANDSHAKE_FAILURES = (NetworkError, OSError)

log = logging.getLogger("looming.tls")

HANDSHAKE_TIMEOUT_S = 10.0


class TlsTcpFlow(TlsFlow):
    """A TLS connection over a TCP flow: a :class:`TcpFlow` carrying plaintext."""

    def __init__(self, tcp: TcpFlow, connection: TlsConnection) -> None:
        super().__init__(tcp, connection)
        self.tcp = tcp

    @classmethod
    async def establish(
        cls, tcp: TcpFlow, connection: TlsConnection, timeout: float | None
    ) -> TlsTcpFlow:
        """Run the handshake over ``tcp``, within ``timeout`` seconds when given."""
        tls = cls(tcp, connection)
        try:
            async with asyncio.timeout(timeout):
                await tls.handshake()
        except TimeoutError:
            raise ConnectionTimeout(f"TLS handshake did not finish within {timeout} s") from None
        return tls

    @property
    def local_address(self) -> tuple[str, int]:
        return self.tcp.local_address

    @property
    def remote_address(self) -> tuple[str, int]:
        return self.tcp.remote_address

    def set_nodelay(self, enabled: bool) -> None:
        self.tcp.set_nodelay(enabled)

    def set_keepalive(
        self,
        enabled: bool,
        *,
        idle: float | None = None,
        interval: float | None = None,
        probes: int | None = None,
    ) -> None:
        self.tcp.set_keepalive(enabled, idle=idle, interval=interval, probes=probes)


class TlsTcp:
    """:class:`looming.devices.Tcp` with a TLS handshake on every connection."""

    def __init__(self, tcp: Tcp, server: TlsConfig | None, client: TlsConfig) -> None:
        self._tcp = tcp
        self._server = server
        self._client = client

    async def listen(
        self, port: int, handler: TcpHandler, *, host: str | None = None, backlog: int = 128
    ) -> Listener:
        server = self._server
        if server is None:
            raise DeviceError(
                "tls: cannot listen without a certificate; put server.pem and server.key "
                "in the tls device's key-value store"
            )

        async def handshake_then_serve(flow: TcpFlow) -> None:
            try:
                secure = await TlsTcpFlow.establish(
                    flow, TlsConnection(server, server_side=True), HANDSHAKE_TIMEOUT_S
                )
            except HANDSHAKE_FAILURES as exc:
                host, remote_port = flow.remote_address
                log.info("TLS handshake with %s:%d failed: %s", host, remote_port, exc)
                return
            try:
                await handler(secure)
            finally:
                await secure.close()

        return await self._tcp.listen(port, handshake_then_serve, host=host, backlog=backlog)

    async def connect(
        self, host: str | IPv4Address | IPv6Address, port: int, *, timeout: float | None = None
    ) -> TcpFlow:
        flow = await self._tcp.connect(host, port, timeout=timeout)
        # An IPv6 literal may come bracketed; the name verified is the bare address.
        name = str(host).removeprefix("[").removesuffix("]")
        connection = TlsConnection(self._client, server_side=False, server_name=name)
        try:
            return await TlsTcpFlow.establish(flow, connection, timeout)
        except BaseException:
            await flow.close()
            raise


class TlsStack:
    """:class:`looming.devices.Stack` over another stack, with TLS on TCP."""

    scheme = "https"
    """How URLs to a service on this stack begin (a plain stack's: ``http``)."""

    def __init__(self, stack: Stack, tcp: TlsTcp) -> None:
        self._stack = stack
        self._tcp = tcp

    @classmethod
    async def connect(
        cls,
        stack: Stack,
        store: KvRo,
        random: Random,
        clock: Clock,
        *,
        certificate: str = "server.pem",
        private_key: str = "server.key",
        ca: str = "ca.pem",
        alpn: tuple[str, ...] = (),
        client_ca: str = "client-ca.pem",
        client_auth: str = "none",
        require_ems: bool = True,
    ) -> TlsStack:
        """Load and check the identity and trust anchors; refuse what cannot work.

        An unusable key or certificate (mismatched, expired, encrypted without
        ``$LOOMING_TLS_KEY_PASSWORD``) stops start-up with the reason
        (:class:`looming.errors.UsageError`, exit code 2).
        """
        now = datetime.datetime.fromtimestamp(clock.now(), datetime.UTC)
        server_identity = await _load_identity(store, certificate, private_key, now)
        trust = await _load_trust(store, ca)
        if not require_ems:
            log.warning(
                "tls: TLS 1.2 peers without the extended master secret are accepted "
                "(require_ems is off): such sessions are open to the triple handshake attack"
            )
        protocols = [p.encode() for p in alpn]
        server = None
        if server_identity is not None:
            client_trust, required = await _client_auth(store, client_ca, client_auth)
            server = TlsConfig(
                certificates=[server_identity],
                client_trust=client_trust,
                require_client_certificate=required,
                alpn_protocols=protocols,
                require_extended_master_secret=require_ems,
                random=random,
                clock=clock,
            )
        client = TlsConfig(
            trust=trust,
            alpn_protocols=protocols,
            require_extended_master_secret=require_ems,
            random=random,
            clock=clock,
        )
        return cls(stack, TlsTcp(stack.tcp, server, client))

    @property
    def tcp(self) -> Tcp:
        return self._tcp

    @property
    def udp(self) -> Udp:
        return self._stack.udp

    def addresses(self) -> Sequence[IPv4Interface | IPv6Interface]:
        return self._stack.addresses()

    async def disconnect(self) -> None:
        await self._stack.disconnect()


async def _maybe_get(store: KvRo, key: str) -> bytes | None:
    try:
        return await store.get(key)
    except KeyNotFound:
        return None


async def _load_identity(
    store: KvRo, certificate: str, private_key: str, now: datetime.datetime
) -> CertifiedKey | None:
    cert_pem = await _maybe_get(store, certificate)
    key_pem = await _maybe_get(store, private_key)
    if cert_pem is None and key_pem is None:
        return None
    if cert_pem is None or key_pem is None:
        missing = certificate if cert_pem is None else private_key
        raise DeviceError(f"tls: {missing!r} is missing from the store; give both or neither")
    try:
        return load_identity(
            cert_pem,
            key_pem,
            password=read_key_password(None),
            now=now,
            cert_name=repr(certificate),
            key_name=repr(private_key),
        )
    except UsageError as exc:
        raise UsageError(f"tls: {exc}") from None


async def _client_auth(store: KvRo, client_ca: str, mode: str) -> tuple[TrustStore | None, bool]:
    """The CAs client certificates must chain to, and whether one is required."""
    if mode == "none":
        return None, False
    if mode not in ("optional", "required"):
        raise UsageError(f"tls: client auth must be none, optional or required, not {mode!r}")
    pem = await _maybe_get(store, client_ca)
    if pem is None:
        raise UsageError(
            f"tls: client auth is {mode} but {client_ca!r} (the client CAs) is not in the store"
        )
    try:
        trust = TrustStore(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise UsageError(f"tls: cannot load client CA certificates {client_ca!r}: {exc}") from None
    return trust, mode == "required"


async def _load_trust(store: KvRo, ca: str) -> TrustStore:
    pem = await _maybe_get(store, ca)
    if pem is None:
        return TrustStore.system()
    try:
        return TrustStore(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise DeviceError(f"tls: cannot load CA certificates {ca!r}: {exc}") from None


__all__ = ["TlsStack", "TlsTcp", "TlsTcpFlow"]
