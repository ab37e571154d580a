"""The ``unix`` target: a zipapp run by the host's Python.

``--net socket`` (the default) gives the application the host's TCP/IP
stack through sockets; ``--net direct`` runs looming's own stack on a TAP
device. ``--kv-ro crunch`` (the default) embeds kv_ro folders in the
artifact; ``--kv-ro direct`` reads them from the application folder. The
artifact carries the compiled packages it needs, built for the interpreter
that built it, and checks at start that it runs on one that can load them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from looming.config.dsl import Device, device
from looming.config.plan import Dep, Impl, KeyDecl
from looming.config.targets import Target

if TYPE_CHECKING:
    from looming.config.build import BuildReport

NET_CHOICES = ("socket", "direct")
KV_RO_CHOICES = ("crunch", "direct")


def host_device_impl(kind: str, where: dict[str, str]) -> Impl:
    """The console, time, clock or random device as the host's Python
    gives it (``where`` describes each for ``describe``)."""
    if kind == "console":
        return Impl("looming.unix.console:UnixConsole", summary=where["console"])
    if kind == "time":
        return Impl("looming.unix.time:UnixTime", summary=where["time"])
    if kind == "clock":
        return Impl("looming.unix.clock:UnixClock", summary=where["clock"])
    if kind == "random":
        return Impl(
            "looming.unix.random:UnixRandom",
            kwargs=[("seed", "keys.seed")],
            keys=[KeyDecl("seed", "int", None, "seed for a deterministic random stream")],
            summary=f"{where['random']}, or seeded by --seed",
        )
    raise ValueError(f"the host has no {kind!r} device; it has {', '.join(where)}")


_HOST = {
    "console": "stdout",
    "time": "host monotonic clock",
    "clock": "host wall clock",
    "random": "os.urandom",
}


def _kv_ro_direct_path(dirname: str) -> str:
    return f"runtime.app_path({dirname!r})"


def host_device(dev: Device, options: dict[str, str]) -> Impl:
    """console, time, clock and random: the host's."""
    return host_device_impl(dev.kind, _HOST)


class UnixTarget(Target):
    name = "unix"
    summary = "a zipapp run by the host's Python (socket or direct networking)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--net",
            choices=NET_CHOICES,
            default="socket",
            help="socket: host sockets (default); direct: looming's TCP/IP stack on a TAP device",
        )
        parser.add_argument(
            "--kv-ro",
            dest="kv_ro",
            choices=KV_RO_CHOICES,
            default="crunch",
            help="crunch: embed kv_ro folders in the artifact (default); direct: read the folder",
        )

    def default_options(self) -> dict[str, str]:
        return {"net": "socket", "kv_ro": "crunch"}

    def build(
        self, app_dir: Path, unikernel: str, main_py: Path, crunch: list[tuple[str, str]]
    ) -> BuildReport:
        """A zipapp carrying the compiled packages it reaches, as this
        interpreter has them: it runs on any interpreter that can load them
        (same implementation, version and platform) and refuses others with
        exit status 2 (see :mod:`looming.config.build_boot`)."""
        from looming.config.build import write_zipapp

        artifact = self.artifact(app_dir, unikernel)
        return write_zipapp(artifact, main_py, app_dir, crunch, natives=True)

    def run_command(self, artifact: Path, argv: list[str]) -> list[str]:
        """The artifact as it runs on another machine: without this
        interpreter's site-packages, so a module the build left out fails
        here too (and the artifact names it, see
        :class:`looming.config.build_boot.NotPacked`)."""
        from looming.config.build import isolated_run_command

        return isolated_run_command(artifact, argv)


def kv_ro_impl(dev: Device, options: dict[str, str]) -> Impl:
    """A folder crunched into the artifact, or read in place with --kv-ro direct."""
    dirname = dev.setting("dirname")
    if options.get("kv_ro", "crunch") == "direct":
        return Impl(
            "looming.unix.kv:DirectoryKv.connect",
            args=[_kv_ro_direct_path(dirname)],
            awaited=True,
            served_folders=[dirname],
            summary=f"folder {dirname}/",
        )
    return Impl(
        "looming.unix.kv:CrunchedKv.connect",
        args=[repr(dev.name_hint)],
        awaited=True,
        crunch=[(dev.name_hint, dirname)],
        summary=f"{dirname}/ crunched into the artifact",
    )


def kv_rw_impl(dev: Device, options: dict[str, str]) -> Impl:
    dirname = dev.setting("dirname")
    key = f"{dev.name_hint}_dir"
    return Impl(
        "looming.unix.kv:DirectoryKvRw.connect",
        args=[f"keys.{key}"],
        awaited=True,
        keys=[KeyDecl(key, "str", dirname, f"folder holding the {dirname!r} store")],
        summary=f"folder {dirname}/",
    )


def block_impl(dev: Device, options: dict[str, str]) -> Impl:
    filename = dev.setting("filename")
    key = f"{dev.name_hint}_file"
    return Impl(
        "looming.unix.block:FileBlock.connect",
        args=[f"keys.{key}"],
        kwargs=[("sector_size", str(dev.setting("sector_size", 512)))],
        awaited=True,
        disconnect="disconnect",
        keys=[KeyDecl(key, "str", filename, f"file backing the {filename!r} block device")],
        summary=f"file {filename}",
    )


def network_impl(dev: Device, options: dict[str, str]) -> Impl:
    """A TAP device, with --net direct only (sockets need no frames)."""
    if options.get("net") != "direct":
        raise TARGET.unsupported(dev, "only with --net direct")
    iface = dev.setting("iface")
    key = "interface" if iface is None else f"{dev.name_hint}_interface"
    return Impl(
        "looming.net.netif.tap:TapNetwork.connect",
        args=[f"keys.{key}"],
        kwargs=[("offload", "keys.offload")],
        awaited=True,
        disconnect="disconnect",
        keys=[
            KeyDecl(key, "str", iface or "tap0", "TAP interface to attach to"),
            KeyDecl(
                "offload",
                "bool",
                True,
                "virtio-net headers with checksum and segmentation offloads "
                "(when the TAP supports them)",
            ),
        ],
        summary="TAP device",
    )


def stack_impl(dev: Device, options: dict[str, str]) -> Impl:
    """The host's sockets (--net socket), or looming's stack on TAP (--net direct)."""
    if options.get("net", "socket") == "socket":
        return _socket_stack_impl()
    return direct_stack_impl(dev)


def _socket_stack_impl() -> Impl:
    return Impl(
        "looming.unix.socket_stack:SocketStack.connect",
        kwargs=[
            ("host", "str(keys.ipv4.ip)"),
            (
                "ipv6",
                "str(keys.ipv6_address.ip) if keys.ipv6_address is not None"
                " else ('::' if keys.ipv4.ip.is_unspecified else '::1')"
                " if keys.ipv6 or keys.ipv6_only else None",
            ),
            ("ipv6_only", "keys.ipv6_only"),
        ],
        awaited=True,
        disconnect="disconnect",
        deps={},
        keys=[
            # Loopback unless told otherwise: what listens on a network is
            # reachable from it only when configured so.
            KeyDecl(
                "ipv4",
                "ipv4_interface",
                "127.0.0.1/32",
                "address to listen on (0.0.0.0 for every host address)",
            ),
            KeyDecl(
                "ipv6",
                "bool",
                False,
                "listen on IPv6 too: ::1 beside 127.0.0.1 (:: beside 0.0.0.0)",
            ),
            KeyDecl(
                "ipv6_address",
                "ipv6_interface",
                None,
                "IPv6 address to listen on too (turns --ipv6 on; :: is every address "
                "of both families on one dual-stack socket)",
            ),
            KeyDecl(
                "ipv6_only",
                "bool",
                False,
                "IPv6 only: no IPv4 listener (turns IPv6 on; '::' gets IPV6_V6ONLY)",
            ),
            KeyDecl("loop", "str", "auto", "event loop: auto (uvloop if found), asyncio, uvloop"),
        ],
        summary="host sockets",
    )


def direct_stack_impl(dev: Device) -> Impl:
    """looming's own TCP/IP stack on the stack device's network device.

    Shared by every target whose network is a raw frame device (TAP, the
    VM's NIC): the stack also needs time, clock and random devices, which
    it shares with the application when the application uses them too.
    """
    time_dev = device("time", where=dev.where)
    clock_dev = device("clock", where=dev.where)
    random_dev = device("random", where=dev.where)
    return Impl(
        "looming.net.stack:DirectStack.connect",
        args=[Dep("network")],
        kwargs=[
            ("time", Dep("time")),
            ("clock", Dep("clock")),
            ("random", Dep("random")),
            ("address", "None if keys.dhcp or keys.ipv6_only else keys.ipv4"),
            ("gateway", "keys.ipv4_gateway"),
            ("dhcp", "keys.dhcp"),
            ("max_connections", "keys.tcp_max_connections"),
            ("memory_limit", "keys.tcp_memory_limit"),
            ("congestion_control", "keys.tcp_congestion"),
            # An IPv6 address or gateway given turns IPv6 on by itself.
            (
                "ipv6",
                "keys.ipv6 or keys.ipv6_only or keys.ipv6_address is not None"
                " or keys.ipv6_gateway is not None",
            ),
            ("ipv4", "not keys.ipv6_only"),
            ("ipv6_address", "keys.ipv6_address"),
            ("ipv6_gateway", "keys.ipv6_gateway"),
            ("slaac", "keys.slaac"),
            ("slaac_secret", "keys.slaac_secret or None"),
        ],
        awaited=True,
        disconnect="disconnect",
        deps={"network": dev.deps[0], "time": time_dev, "clock": clock_dev, "random": random_dev},
        keys=[
            KeyDecl(
                "ipv4", "ipv4_interface", "10.0.0.2/24", "address and prefix length (e.g. /24)"
            ),
            KeyDecl("ipv4_gateway", "ipv4_address", None, "default gateway"),
            KeyDecl("dhcp", "bool", False, "get the address by DHCP"),
            KeyDecl(
                "tcp_max_connections",
                "int",
                10000,
                "TCP connections at most, half-open ones aside (0: no limit)",
            ),
            KeyDecl(
                "tcp_memory_limit",
                "int",
                256 * 1024 * 1024,
                "bytes all TCP send and receive queues may hold (0: no limit, else 65536 or more)",
            ),
            KeyDecl("tcp_congestion", "str", "cubic", "TCP congestion control: cubic or newreno"),
            KeyDecl(
                "ipv6", "bool", False, "IPv6 too: link-local address, SLAAC unless --slaac off"
            ),
            KeyDecl("ipv6_only", "bool", False, "IPv6 only: no IPv4 address (turns IPv6 on)"),
            KeyDecl(
                "ipv6_address",
                "ipv6_interface",
                None,
                "static IPv6 address and prefix length (e.g. /64)",
            ),
            KeyDecl("ipv6_gateway", "ipv6_address", None, "static IPv6 default router"),
            KeyDecl("slaac", "bool", True, "with IPv6: addresses and routers from advertisements"),
            KeyDecl(
                "slaac_secret",
                "str",
                "",
                "32 or more hex digits: the same SLAAC address every start (else new each start)",
            ),
        ],
        summary="looming TCP/IP stack",
        check="looming.net.stack_checks:check_direct_keys",
    )


TARGET = UnixTarget()
