"""Address parsing and printing: every address and port survives a print
and a parse; what is not an address is refused with a message."""

from __future__ import annotations

import argparse
import urllib.parse
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from looming.addresses import (
    AddressError,
    format_endpoint,
    format_host,
    host_argument,
    parse_endpoint,
    parse_host,
    stack_url,
    unmapped,
    url,
)
from looming.errors import UsageError

addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
ports = st.integers(min_value=0, max_value=65535)


@given(addresses, ports)
def test_an_endpoint_prints_and_parses_back(address: IPv4Address | IPv6Address, port: int) -> None:
    text = format_endpoint(str(address), port)
    host, parsed_port = parse_endpoint(text)
    assert parsed_port == port
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        assert host == str(address.ipv4_mapped)  # shown as the IPv4 address it is
    else:
        assert ip_address(host) == address


@given(addresses, ports)
def test_a_url_is_what_urllib_reads(address: IPv4Address | IPv6Address, port: int) -> None:
    """Python's own URL parser (a peer) finds the same host and port in the URL."""
    if address.is_unspecified:
        return
    split = urllib.parse.urlsplit(url("http", str(address), port, "/x"))
    assert split.port == port
    assert split.path == "/x"
    assert split.hostname is not None
    expected = unmapped(str(address))
    assert ip_address(split.hostname) == ip_address(expected)


@given(addresses)
def test_a_host_parses_with_or_without_brackets(address: IPv4Address | IPv6Address) -> None:
    assert parse_host(str(address)) == str(address)
    assert parse_host(format_host(str(address))) == str(address)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[::1]:8443", ("::1", 8443)),
        ("[2001:DB8::1]:80", ("2001:db8::1", 80)),
        ("127.0.0.1:4433", ("127.0.0.1", 4433)),
        ("Example.ORG:443", ("example.org", 443)),
        (":8080", ("", 8080)),
        ("[fe80::1%lo]:22", ("fe80::1%lo", 22)),
    ],
)
def test_endpoints(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text) == expected


def test_a_default_port_lets_a_bare_host_through() -> None:
    assert parse_endpoint("::1", default_port=80) == ("::1", 80)
    assert parse_endpoint("[::1]", default_port=80) == ("::1", 80)
    assert parse_endpoint("localhost", default_port=80) == ("localhost", 80)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("::1:8443", "needs brackets"),
        ("[::1]8443", r"expected \[IPV6\]:PORT"),
        ("[::1:8443", r"missing .\]."),
        ("[127.0.0.1]:80", "IPv6 address only"),
        ("localhost", "expected HOST:PORT"),
        ("localhost:http", "port number"),
        ("localhost:65536", "port number"),
        ("bad_name:80", "neither an IP address"),
        ("300.1.2.3:80", "not a valid IPv4"),
        ("-x.org:80", "neither an IP address"),
        ("[]:80", "IPv6 address only"),
    ],
)
def test_bad_endpoints_say_why(text: str, says: str) -> None:
    with pytest.raises(AddressError, match=says) as caught:
        parse_endpoint(text)
    assert isinstance(caught.value, UsageError)  # a unikernel exits 2 on it


def test_a_bad_host_argument_is_an_argparse_error() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="neither an IP address"):
        host_argument("no such host!")
    assert host_argument("[::1]") == "::1"


def test_a_zone_is_kept_in_an_endpoint_and_encoded_in_a_url() -> None:
    assert format_endpoint("fe80::1%eth0", 22) == "[fe80::1%eth0]:22"
    assert parse_endpoint("[fe80::1%eth0]:22") == ("fe80::1%eth0", 22)
    assert url("http", "fe80::1%eth0", 80) == "http://[fe80::1%25eth0]:80/"


def test_mapped_addresses_are_shown_as_ipv4() -> None:
    assert unmapped("::ffff:192.0.2.7") == "192.0.2.7"
    assert unmapped("::1") == "::1"
    assert format_endpoint("::ffff:127.0.0.1", 80) == "127.0.0.1:80"


def test_urls_of_unspecified_addresses_point_at_loopback() -> None:
    assert url("http", "::", 8080) == "http://[::1]:8080/"
    assert url("http", "0.0.0.0", 8080) == "http://127.0.0.1:8080/"
    assert url("http", "fe80::1%eth0", 80) == "http://[fe80::1%25eth0]:80/"
    assert stack_url("http", [IPv6Interface("::/0"), IPv4Interface("0.0.0.0/0")], 80) == (
        "http://[::1]:80"
    )
    assert stack_url("https", [IPv6Interface("::/0")], 8443, unspecified_as="localhost") == (
        "https://localhost:8443"
    )
    assert stack_url("http", [], 80, listen="::1") == "http://[::1]:80"


@given(st.text(alphabet="0123456789abcdefABCDEF:.[]%-_ xyz/", max_size=50))
def test_any_text_is_an_endpoint_or_a_reason(text: str) -> None:
    """Nothing a user types makes the parser fail any other way, and what it
    accepts prints and parses back to itself."""
    for default in (None, 80):
        try:
            host, port = parse_endpoint(text, default_port=default)
        except AddressError as error:
            assert str(error)
            continue
        assert 0 <= port <= 65535
        if host:
            assert parse_endpoint(format_endpoint(host, port)) == (unmapped(host), port)
