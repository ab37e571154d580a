"""Bad key values of a ``--net direct`` unikernel are reported as themselves.

The generated code opened the TAP before the stack checked its keys, so
with the TAP held by another process every bad value came out as "TAP
busy" (exit 1). The keys are now checked before any device opens
(stack_checks.check_direct_keys): one line naming the key, exit 2. An
address given without its prefix length (read as a /32: the unikernel
started and nothing on the link could reach it) and a gateway zone naming
no interface are refused the same way.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

import pytest

from looming.errors import UsageError
from looming.net.netif.tap import TapNetwork
from looming.net.stack_checks import check_direct_keys
from tests.direct.unikernel import build_direct
from tests.net.kernel import have_root, sh, unique_suffix
from tests.net.test_audit_exit_codes import run_echo

# (keys, what the one line must say)
BAD_VALUES = [
    (["--ipv4", "10.16.0.2/24", "--ipv4-gateway", "10.16.0.2"], "--ipv4-gateway 10.16.0.2"),
    (["--ipv4", "0.0.0.0/24"], "not an address an interface can hold"),
    (["--ipv4", "224.0.0.5/24"], "not an address an interface can hold"),
    (["--ipv6", "true", "--slaac-secret", "zz"], "--slaac-secret 'zz': not hex digits"),
    (["--dhcp", "true", "--ipv6-only", "true"], "takes no IPv4 address and no --dhcp"),
    (["--ipv4", "10.16.0.2"], "--ipv4 10.16.0.2/24"),
    (["--ipv6-address", "fd16::2"], "--ipv6-address fd16::2/64"),
    (["--ipv6-gateway", "fe80::1%lmnosuchif0"], "no interface 'lmnosuchif0'"),
]


@pytest.fixture(scope="module")
def echo_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_direct("echo", tmp_path_factory.mktemp("audit-keys"))


@pytest.mark.root
def test_bad_values_exit_2_even_when_the_tap_is_busy(echo_app: Path) -> None:
    if not have_root():
        pytest.fail("this test needs root and /dev/net/tun (it is marked root)")
    name = f"lmk{unique_suffix()}"
    try:
        holder = asyncio.run(TapNetwork.connect(name))
        try:
            for keys, message in BAD_VALUES:
                code, lines = run_echo(echo_app, "--interface", name, *keys)
                assert code == 2, (keys, lines)
                assert len(lines) == 1 and message in lines[0], (keys, lines)
        finally:
            asyncio.run(holder.disconnect())
    finally:
        sh("ip", "link", "del", name, check=False)


GOOD: dict[str, Any] = {
    "address": IPv4Interface("10.16.0.2/24"),
    "gateway": None,
    "dhcp": False,
    "max_connections": 10000,
    "memory_limit": 0,
    "congestion_control": "cubic",
    "ipv6": False,
    "ipv4": True,
    "ipv6_address": None,
    "ipv6_gateway": None,
    "slaac": True,
    "slaac_secret": None,
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"address": IPv4Interface("10.16.0.2/32")}, "give the prefix length too"),
        (
            {"ipv6": True, "ipv6_address": IPv6Interface("fd16::2/128")},
            "give the prefix length too",
        ),
        ({"ipv6": True, "ipv6_gateway": IPv6Address("fe80::1%lmnosuchif0")}, "no interface"),
        ({"ipv6": True, "ipv6_gateway": IPv6Address("fe80::1%999999")}, "no interface"),
        ({"gateway": IPv4Address("10.16.0.2")}, "--ipv4-gateway"),
    ],
)
def test_key_checks_refuse_what_cannot_work(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as refused:
        check_direct_keys(**{**GOOD, **changes})
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ipv6": True, "ipv6_address": IPv6Interface("fd16::2/64")},
        {"ipv6": True, "ipv6_gateway": IPv6Address("fe80::1%lo")},
        {"ipv6": True, "ipv6_gateway": IPv6Address("fe80::1%1")},
        {"ipv6": True, "ipv6_address": IPv6Interface("fd16::2/128"), "ipv6_gateway": "fe80::1"},
        {"address": None, "dhcp": True},
    ],
)
def test_key_checks_pass_what_works(changes: dict[str, Any]) -> None:
    values = {**GOOD, **changes}
    if isinstance(values["ipv6_gateway"], str):
        values["ipv6_gateway"] = IPv6Address(values["ipv6_gateway"])
    check_direct_keys(**values)
