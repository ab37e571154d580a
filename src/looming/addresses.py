"""Addresses as users type and see them: IPv4, IPv6 and host names, with ports.

One set of rules for every command and unikernel that takes or prints an
address, so ``[::1]:8443``, ``::1``, ``127.0.0.1:8443`` and ``localhost``
mean the same everywhere:

- a host is an IPv4 literal, an IPv6 literal (brackets optional, a ``%zone``
  allowed) or a DNS name (RFC 1123 labels);
- a host with a port is ``HOST:PORT``; an IPv6 literal with a port needs its
  brackets (``[::1]:8443``), since ``::1:8443`` is itself an IPv6 address;
- printed, an IPv6 literal with a port or in a URL is bracketed (RFC 3986
  3.2.2), and an IPv4-mapped address (``::ffff:192.0.2.1``, what a dual-stack
  socket reports for an IPv4 peer) is shown as the IPv4 address it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address

from looming.errors import UsageError

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


class AddressError(UsageError, ValueError):
    """An address, host or port a user gave cannot be used; the message says
    why (a unikernel or command given one exits with code 2)."""


def _ip_literal(text: str) -> IPv4Address | IPv6Address | None:
    """The IP address ``text`` spells (zone kept for IPv6), else None."""
    try:
        return ip_address(text)
    except ValueError:
        return None


def parse_host(text: str) -> str:
    """``text`` as a host to bind or connect to: an IP literal in its
    canonical spelling (brackets dropped) or a DNS name, lower-cased."""
    host = text.strip()
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise AddressError(f"unbalanced brackets in {text!r}; write [ADDRESS], e.g. [::1]")
        inner = _ip_literal(host[1:-1])
        if not isinstance(inner, IPv6Address):
            raise AddressError(f"{text!r}: brackets hold an IPv6 address only, e.g. [::1]")
        return str(inner)
    literal = _ip_literal(host)
    if literal is not None:
        return str(literal)
    name = host.removesuffix(".")
    if not name or len(name) > 253 or not all(_LABEL.match(part) for part in name.split(".")):
        raise AddressError(
            f"{text!r} is neither an IP address (e.g. 127.0.0.1, ::1) nor a host name "
            "(letters, digits and hyphens between dots)"
        )
    if name.replace(".", "").isdigit():
        raise AddressError(f"{text!r} is not a valid IPv4 address")
    return name.lower()


def parse_port(text: str, *, allow_zero: bool = True) -> int:
    """A TCP/UDP port number from ``text`` (0, to let the system pick, if allowed)."""
    low = 0 if allow_zero else 1
    if not text.isdigit() or not low <= int(text) <= 65535:
        raise AddressError(f"expected a port number {low} to 65535, got {text!r}")
    return int(text)


def parse_endpoint(
    text: str, *, default_port: int | None = None, allow_zero: bool = True
) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (host empty) as (host, port).

    With ``default_port``, a bare host (``localhost``, ``::1``, ``[::1]``) is
    accepted too. A bare IPv6 literal never takes a port: ``::1:8443`` is
    the address ``::1:8443``, which is why a port needs the brackets.
    """
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise AddressError(f"missing ']' in {text!r}; write [IPV6]:PORT, e.g. [::1]:8443")
        host, rest = parse_host(text[: close + 1]), text[close + 1 :]
        if not rest and default_port is not None:
            return host, default_port
        if not rest.startswith(":"):
            raise AddressError(f"expected [IPV6]:PORT, e.g. [::1]:8443, got {text!r}")
        return host, parse_port(rest[1:], allow_zero=allow_zero)
    if text.count(":") > 1:
        if default_port is not None and isinstance(_ip_literal(text), IPv6Address):
            return parse_host(text), default_port
        raise AddressError(
            f"an IPv6 address with a port needs brackets: [ADDRESS]:PORT, not {text!r}"
        )
    host_text, colon, port_text = text.partition(":")
    if not colon:
        if default_port is None:
            raise AddressError(
                f"expected HOST:PORT, e.g. 127.0.0.1:8443 or [::1]:8443, got {text!r}"
            )
        return parse_host(text), default_port
    host = parse_host(host_text) if host_text else ""
    return host, parse_port(port_text, allow_zero=allow_zero)


def unmapped(address: str) -> str:
    """An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) as its IPv4 address;
    any other address unchanged."""
    if address.startswith("::ffff:") or address.startswith("::FFFF:"):
        literal = _ip_literal(address)
        if isinstance(literal, IPv6Address) and literal.ipv4_mapped is not None:
            return str(literal.ipv4_mapped)
    return address


def is_ipv6(host: str) -> bool:
    """Whether ``host`` is an IPv6 literal (not a name, not IPv4)."""
    return isinstance(_ip_literal(host.removeprefix("[").removesuffix("]")), IPv6Address)


def format_host(host: str, *, in_url: bool = False) -> str:
    """``host`` as it goes before ``:PORT``: IPv6 in brackets. ``in_url``
    percent-encodes a zone (``[fe80::1%25eth0]``, RFC 6874)."""
    if is_ipv6(host) and not host.startswith("["):
        return "[" + (host.replace("%", "%25") if in_url else host) + "]"
    return host


def format_endpoint(host: str, port: int, *, in_url: bool = False) -> str:
    """``127.0.0.1:80``, ``[::1]:80``, ``example.org:80``."""
    return f"{format_host(unmapped(host), in_url=in_url)}:{port}"


def reachable_host(host: str) -> str:
    """The loopback address of ``host``'s family when ``host`` is the
    unspecified address (every address: 0.0.0.0 or ::), for a URL a browser
    on this machine can open; any other host unchanged."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::" or host == "[::]":
        return "::1"
    return host


def url(scheme: str, host: str, port: int, path: str = "/") -> str:
    """``scheme://host:port/path`` with an IPv6 host bracketed and the
    unspecified address replaced by loopback (what a local client can open)."""
    return f"{scheme}://{format_endpoint(reachable_host(host), port, in_url=True)}{path}"


def stack_url(
    scheme: str,
    addresses: Sequence[IPv4Interface | IPv6Interface],
    port: int,
    *,
    listen: str | None = None,
    unspecified_as: str | None = None,
) -> str:
    """``scheme://HOST:PORT`` for a server listening on ``listen`` (else on
    the stack's first address): a local client's way in. The unspecified
    address becomes loopback of its family, or ``unspecified_as`` (say
    ``localhost``, the name a certificate holds)."""
    host = listen or (str(addresses[0].ip) if addresses else "127.0.0.1")
    if unspecified_as is not None and host in ("0.0.0.0", "::"):
        host = unspecified_as
    return f"{scheme}://{format_endpoint(reachable_host(host), port, in_url=True)}"


def host_argument(text: str) -> str:
    """An ``argparse`` type for a host; a bad one exits 2 with the reason."""
    try:
        return parse_host(text)
    except AddressError as error:
        import argparse  # only a command line's parser needs it (not a unikernel at boot)

        raise argparse.ArgumentTypeError(str(error)) from None


def port_argument(text: str) -> int:
    """An ``argparse`` type for a port number (0 lets the system choose)."""
    try:
        return parse_port(text)
    except AddressError as error:
        import argparse

        raise argparse.ArgumentTypeError(str(error)) from None


__all__ = [
    "AddressError",
    "format_endpoint",
    "format_host",
    "host_argument",
    "is_ipv6",
    "parse_endpoint",
    "parse_host",
    "parse_port",
    "port_argument",
    "reachable_host",
    "stack_url",
    "unmapped",
    "url",
]
