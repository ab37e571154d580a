"""Key parsing and log levels of built unikernels."""

from __future__ import annotations

import io
import ipaddress
import logging

import pytest

from looming.runtime import KeySpec, UsageError, configure_logging, parse_keys, usage

SPECS = [
    KeySpec("port", "int", 8080, "TCP port"),
    KeySpec("ipv4", "ipv4_interface", "10.0.0.2/24", "address"),
    KeySpec("dhcp", "bool", False, "use DHCP"),
    KeySpec("name", "str", None, "a name"),
]


def test_defaults_and_overrides() -> None:
    keys = parse_keys(SPECS, [])
    assert keys.port == 8080 and keys.ipv4 == ipaddress.IPv4Interface("10.0.0.2/24")
    assert keys.dhcp is False and keys.name is None
    keys = parse_keys(SPECS, ["--port", "81", "--ipv4=192.0.2.1/25", "--dhcp", "--name", "x"])
    assert (keys.port, str(keys.ipv4), keys.dhcp, keys.name) == (81, "192.0.2.1/25", True, "x")
    assert parse_keys(SPECS, ["--dhcp", "false"]).dhcp is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nope", "1"], "unknown key --nope; valid keys: --port, --ipv4, --dhcp, --name"),
        (["--port"], "--port needs a value"),
        (["--port", "x"], "--port: 'x' is not a valid int"),
        (["--ipv4", "300.0.0.1/8"], "--ipv4: '300.0.0.1/8' is not a valid ipv4_interface"),
        (["stray"], "unexpected argument 'stray'"),
    ],
)
def test_bad_keys_are_explained(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_keys(SPECS, argv)


def test_usage_lists_keys_and_defaults() -> None:
    text = usage("web", SPECS)
    assert "--port INT" in text and "(default: 8080)" in text and "(default: none)" in text


def test_log_levels_per_source() -> None:
    stream = io.StringIO()
    configure_logging("*:warning,http:debug", stream)
    logging.getLogger("http").debug("visible")
    logging.getLogger("looming.http").debug("also visible")
    logging.getLogger("other").info("hidden")
    out = stream.getvalue()
    assert "visible" in out and "also visible" in out and "hidden" not in out
    with pytest.raises(UsageError, match="unknown level 'loud'"):
        configure_logging("*:loud", stream)
    configure_logging("*:info")
    logging.getLogger("http").setLevel(logging.NOTSET)
    logging.getLogger("looming.http").setLevel(logging.NOTSET)
