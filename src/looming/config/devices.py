"""The device functions a ``config.py`` calls.

Each returns a :class:`~looming.config.dsl.Device`; targets map kinds to
implementations. Adding a device kind means adding a function here and a
case in each target that supports it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from looming.config.dsl import Device, caller_location, device, fail
from looming.config.plan import Dep, Impl, KeyDecl

_DIR_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")


def _name_from(path: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", path.strip("/").split("/")[-1]) or "data"
    return base if not base[0].isdigit() else "d_" + base


def console() -> Device:
    """The console: stdout on unix, the serial port in a VM."""
    return device("console", where=caller_location())


def time() -> Device:
    """Monotonic time and sleeping."""
    return device("time", where=caller_location())


def clock() -> Device:
    """Wall-clock (POSIX) time."""
    return device("clock", where=caller_location())


def random() -> Device:
    """Random bytes and numbers; seeded by the ``--seed`` key when given."""
    return device("random", where=caller_location())


def _check_dir(func: str, dirname: str) -> None:
    if not isinstance(dirname, str) or not _DIR_NAME.match(dirname) or ".." in dirname.split("/"):
        raise fail(
            f"{func}(): {dirname!r} must be a folder inside the application folder "
            "(a relative path without '..')",
            caller_location(),
        )


def kv_ro(dirname: str) -> Device:
    """A read-only key-value store with the contents of ``dirname``.

    On the unix target it is crunched into the built artifact by default
    (``--kv-ro crunch``) or read from the folder (``--kv-ro direct``).
    """
    _check_dir("kv_ro", dirname)
    return device("kv_ro", where=caller_location(), name=_name_from(dirname), dirname=dirname)


def kv_rw(dirname: str) -> Device:
    """A read-write key-value store kept in ``dirname`` (created if missing)."""
    _check_dir("kv_rw", dirname)
    return device("kv_rw", where=caller_location(), name=_name_from(dirname), dirname=dirname)


def kv_store(path: str, *, branch: str = "main") -> Device:
    """A read-write key-value store kept as a Git repository at ``path``.

    Every write is a commit on ``branch``; the repository is created when
    missing, and ``git`` (clone, log, push) works on it. The path and branch
    are keys, so a deployment can point the unikernel at another repository.
    Commits are stamped by the clock device (shared with the application's).
    """
    _check_dir("kv_store", path)
    if not isinstance(branch, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", branch):
        raise fail(f"kv_store(): {branch!r} is not a branch name", caller_location())
    where = caller_location()
    return device(
        "kv_store",
        [device("clock", where=where)],
        where=where,
        name=_name_from(path),
        path=path,
        branch=branch,
    )


def _kv_store_impl(dev: Device) -> Impl:
    name = dev.name_hint
    return Impl(
        "looming.store.kv:StoreKv.connect",
        args=[f"keys.{name}_repo"],
        kwargs=[("clock", Dep("clock")), ("branch", f"keys.{name}_branch")],
        awaited=True,
        disconnect="disconnect",
        deps={"clock": dev.deps[0]},
        keys=[
            KeyDecl(f"{name}_repo", "str", dev.setting("path"), "Git repository of the store"),
            KeyDecl(
                f"{name}_branch", "str", dev.setting("branch"), "branch the store reads and writes"
            ),
        ],
        summary=f"Git store {dev.setting('path')} ({dev.setting('branch')})",
    )


def block(filename: str, *, sector_size: int = 512) -> Device:
    """A block device backed by ``filename``."""
    _check_dir("block", filename)
    if sector_size <= 0 or sector_size & (sector_size - 1):
        raise fail(f"block(): sector_size must be a power of two, not {sector_size}")
    return device(
        "block",
        where=caller_location(),
        name=_name_from(filename),
        filename=filename,
        sector_size=sector_size,
    )


def default_network() -> Device:
    """The network interface a target uses by default (a TAP device on unix)."""
    return device("network", where=caller_location(), name="net")


def netif(name: str) -> Device:
    """A named network interface (for example a TAP device ``tap1``)."""
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.-]{1,15}$", name):
        raise fail(f"netif(): {name!r} is not an interface name (1-15 letters, digits, _.-)")
    return device("network", where=caller_location(), name="net_" + _name_from(name), iface=name)


def stack(network: Device | None = None) -> Device:
    """A TCP/IP stack over ``network`` (``default_network()`` when omitted).

    ``--net socket`` uses the host's sockets (the network device is unused);
    ``--net direct`` runs looming's own stack on the network device.
    """
    where = caller_location()
    if network is None:
        network = device("network", where=where, name="net")
    if not isinstance(network, Device) or network.kind != "network":
        raise fail(f"stack() needs a network device such as default_network(), not {network!r}")
    return device("stack", [network], where=where)


def tls(
    stack: Device,
    store: Device,
    *,
    certificate: str = "server.pem",
    private_key: str = "server.key",
    ca: str = "ca.pem",
    alpn: tuple[str, ...] = (),
    client_ca: str = "client-ca.pem",
    client_auth: str = "none",
    require_ems: bool = True,
) -> Device:
    """TLS over ``stack``: a stack whose TCP connections are TLS 1.3/1.2.

    ``store`` (a ``kv_ro``) holds the server certificate chain and key (PEM,
    under ``certificate`` and ``private_key``; needed to listen) and the CA
    certificates a client trusts (``ca``; the system's when absent)::

        secure = tls(stack(default_network()), kv_ro("tls"))

    ``client_auth`` ("none", "optional" or "required") asks clients for a
    certificate issued by a CA in ``client_ca``; ``require_ems=False`` lets
    TLS 1.2 peers without the extended master secret in (with a warning).
    Both are also keys of the unikernel: ``--tls-client-auth``, ``--tls-require-ems``.
    """
    where = caller_location()
    if not isinstance(stack, Device) or stack.kind not in ("stack", "tls"):
        raise fail(f"tls() needs a stack device such as stack(default_network()), not {stack!r}")
    if not isinstance(store, Device) or store.kind not in ("kv_ro", "kv_rw"):
        raise fail(f"tls() needs a key-value store such as kv_ro('tls'), not {store!r}")
    names = (certificate, private_key, ca)
    if not all(isinstance(n, str) and n for n in names):
        raise fail("tls(): certificate, private_key and ca must be key names in the store")
    if isinstance(alpn, str) or not all(isinstance(p, str) and 0 < len(p) < 256 for p in alpn):
        raise fail(
            f"tls(): alpn must be a tuple of protocol names such as ('http/1.1',), not {alpn!r}"
        )
    if client_auth not in ("none", "optional", "required"):
        raise fail(
            f"tls(): client_auth must be 'none', 'optional' or 'required', not {client_auth!r}"
        )
    if not isinstance(client_ca, str) or not client_ca or not isinstance(require_ems, bool):
        raise fail("tls(): client_ca must be a key name in the store, require_ems True or False")
    randomness = device("random", where=where)
    clock_dev = device("clock", where=where)
    return device(
        "tls",
        [stack, store, randomness, clock_dev],
        where=where,
        name="tls_stack",
        certificate=certificate,
        private_key=private_key,
        ca=ca,
        alpn=tuple(alpn),
        client_ca=client_ca,
        client_auth=client_auth,
        require_ems=require_ems,
    )


def _tls_impl(dev: Device) -> Impl:
    return Impl(
        "looming.tls.device:TlsStack.connect",
        args=[Dep("stack"), Dep("store"), Dep("random"), Dep("clock")],
        kwargs=[
            ("certificate", repr(dev.setting("certificate"))),
            ("private_key", repr(dev.setting("private_key"))),
            ("ca", repr(dev.setting("ca"))),
            ("alpn", repr(dev.setting("alpn"))),
            ("client_ca", repr(dev.setting("client_ca"))),
            ("client_auth", "keys.tls_client_auth"),
            ("require_ems", "keys.tls_require_ems"),
        ],
        awaited=True,
        deps=dict(zip(("stack", "store", "random", "clock"), dev.deps, strict=True)),
        keys=[
            KeyDecl(
                "tls_client_auth",
                "str",
                dev.setting("client_auth"),
                "client certificates: none, optional or required",
            ),
            KeyDecl(
                "tls_require_ems",
                "bool",
                dev.setting("require_ems"),
                "refuse TLS 1.2 peers without the extended master secret",
            ),
        ],
        summary="TLS 1.3/1.2 on TCP",
    )


# Devices made only of other devices: the same implementation on every target.
PORTABLE: dict[str, Callable[[Device], Impl]] = {"tls": _tls_impl, "kv_store": _kv_store_impl}


def generic_stack(network: Device | None = None) -> Device:
    """Alias of :func:`stack`, after MirageOS's ``generic_stackv4``."""
    return stack(network)


def all_device_functions() -> list[str]:
    return [
        "block",
        "clock",
        "console",
        "default_network",
        "generic_stack",
        "kv_ro",
        "kv_rw",
        "kv_store",
        "netif",
        "random",
        "stack",
        "time",
        "tls",
        "vchan",
    ]


__all__ = [*(f for f in all_device_functions() if f != "vchan"), "Device"]
