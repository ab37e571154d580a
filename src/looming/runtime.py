"""What a built unikernel runs on: key parsing, logging, start-up and shutdown.

The generated ``main.py`` declares its keys and an async ``start`` function
and hands both to :func:`main`; everything else (``--help``, ``--logs``,
signals, exit codes) is here, the same for every unikernel.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, NoReturn

log = logging.getLogger("looming.runtime")

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "quiet": logging.CRITICAL + 10,
}


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, not {text!r}")


# The types a key may have, by name, and how each is read from text.
KEY_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "str": str,
    "float": float,
    "bool": parse_bool,
    "ipv4_interface": ipaddress.IPv4Interface,
    "ipv4_address": ipaddress.IPv4Address,
    "ipv6_interface": ipaddress.IPv6Interface,
    "ipv6_address": ipaddress.IPv6Address,
}


@dataclass(frozen=True)
class KeySpec:
    """A key as the built unikernel knows it: name, type, default, help."""

    name: str
    type_name: str
    default: Any
    doc: str

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, text: str) -> Any:
        return KEY_PARSERS[self.type_name](text)

    def initial(self) -> Any:
        if isinstance(self.default, str) and self.type_name != "str":
            return self.parse(self.default)
        return self.default


class Keys:
    """The values of a unikernel's keys, as attributes (``keys.port``)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"no key named {name!r}")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class UsageError(Exception):
    """Bad command-line input: the message is printed and the exit code is 2."""


def usage(name: str, specs: Sequence[KeySpec]) -> str:
    lines = [f"usage: {name} [--KEY VALUE ...]", "", "keys:"]
    width = max((len(s.option) + len(s.type_name) + 1 for s in specs), default=0)
    for s in specs:
        left = f"{s.option} {s.type_name.upper()}"
        default = "none" if s.default is None else str(s.default)
        lines.append(f"  {left:<{width + 2}} {s.doc} (default: {default})")
    lines.append(f"  {'--help':<{width + 2}} show this message and exit")
    lines.append("")
    lines.append(
        "Each key may also be set by an environment variable, e.g. --port by LOOMING_PORT;"
    )
    lines.append("the command line wins.")
    return "\n".join(lines)


ENV_PREFIX = "LOOMING_"


# Keys whose values are checked beyond their type: the key's name and
# "module:function", a function giving the problem with a value (None when
# fine). The code that uses the value runs the same function, so configure,
# run and the API accept the same values.
KEY_CHECKS: dict[str, str] = {
    "tcp_max_connections": "looming.net.limits:max_connections_problem",
    "tcp_memory_limit": "looming.net.limits:memory_limit_problem",
    "tcp_congestion": "looming.net.limits:congestion_problem",
    "loop": "looming.event_loop:loop_problem",
    **{
        name: f"looming.http.service:{name}_problem"
        for name in (
            "access_log",
            "metrics",
            "max_connections",
            "ws_max_size",
            "max_body_size",
            "shutdown_timeout",
            "cancel_on_disconnect",
            "http_parser",
            "root_path",
            "proxy_headers",
            "forwarded_allow_ips",
        )
    },
}


def _port_checked(spec: KeySpec, value: Any, given_as: str) -> Any:
    """A key named ``port`` or ``*_port`` must be a TCP/UDP port number;
    a key of :data:`KEY_CHECKS` must pass its check."""
    named_port = spec.name == "port" or spec.name.endswith("_port")
    if named_port and isinstance(value, int) and not 0 <= value <= 65535:
        raise UsageError(f"{given_as}: {value} is not a port number (0 to 65535)")
    check = KEY_CHECKS.get(spec.name)
    if check is not None and value is not None:
        import importlib

        module, _, function = check.partition(":")
        problem = getattr(importlib.import_module(module), function)(value)
        if problem is not None:
            raise UsageError(f"{given_as}: {problem}")
    return value


def parse_keys(
    specs: Sequence[KeySpec], argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> Keys:
    """Values for ``specs`` from ``--key value`` / ``--key=value`` arguments,
    else from ``LOOMING_KEY`` environment variables, else the defaults."""
    by_option = {s.option: s for s in specs}
    by_option.update({"--" + s.name: s for s in specs})
    values = {s.name: s.initial() for s in specs}
    environ = os.environ if environ is None else environ
    for from_env in specs:
        variable = ENV_PREFIX + from_env.name.upper()
        if variable in environ:
            text = environ[variable]
            try:
                values[from_env.name] = from_env.parse(text)
            except ValueError as exc:
                raise UsageError(
                    f"{variable}={text!r} is not a valid {from_env.type_name}: {exc}"
                ) from None
            _port_checked(from_env, values[from_env.name], variable)
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise UsageError(f"unexpected argument {arg!r}: keys are given as --KEY VALUE")
        option, eq, text = arg.partition("=")
        spec = by_option.get(option)
        if spec is None:
            valid = ", ".join(s.option for s in specs)
            raise UsageError(f"unknown key {option}; valid keys: {valid}")
        if not eq:
            if spec.type_name == "bool" and (i + 1 == len(args) or args[i + 1].startswith("--")):
                text = "true"
            else:
                i += 1
                if i == len(args):
                    raise UsageError(f"{option} needs a value ({spec.type_name})")
                text = args[i]
        try:
            values[spec.name] = spec.parse(text)
        except ValueError as exc:
            raise UsageError(f"{option}: {text!r} is not a valid {spec.type_name}: {exc}") from None
        _port_checked(spec, values[spec.name], option)
        i += 1
    return Keys(values)


def parse_log_levels(spec: str) -> tuple[int | None, dict[str, int]]:
    """A ``--logs`` value such as ``*:info,http:debug`` as (the default
    level, or None when not given; the level of each named logger, both
    ``NAME`` and ``looming.NAME``)."""
    default: int | None = None
    named: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        source, colon, level_name = item.rpartition(":")
        if not colon:
            source, level_name = "*", item
        level = LEVELS.get(level_name.lower())
        if level is None:
            raise UsageError(
                f"--logs: unknown level {level_name!r} in {item!r}; use one of: "
                + ", ".join(LEVELS)
            )
        if source in ("*", ""):
            default = level
        else:
            named[source] = level
            named["looming." + source] = level
    return default, named


ACCESS_LOGGER = "looming.http.access"


class LogFormatter(logging.Formatter):
    """Stamps each record with its time, level and logger, except the access
    log's: those are written bare (a JSON object, or a common log line, per
    line), as log collectors read them."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if record.name == ACCESS_LOGGER:
            return record.getMessage()
        return super().format(record)


def configure_logging(spec: str, stream: Any = None) -> None:
    """Set log levels from a ``--logs`` value such as ``*:info,http:debug``.

    ``*`` sets the default; ``NAME`` sets both the ``NAME`` logger and
    ``looming.NAME``. Levels: debug, info, warning, error, quiet. Records
    go to ``stream`` (stderr) through :class:`LogFormatter`.
    """
    default, named = parse_log_levels(spec)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogFormatter())
    root.addHandler(handler)
    root.setLevel(logging.INFO if default is None else default)
    for name, level in named.items():
        logging.getLogger(name).setLevel(level)


StartFunction = Callable[[Keys, AsyncExitStack], Awaitable[None]]

# Called on SIGUSR1 while a unikernel runs: each logs its device's state (the
# direct stack its nonzero counters). Devices add themselves and leave.
STATUS_REPORTERS: list[Callable[[], None]] = []


def report_status() -> None:
    """Run every status reporter (a failing one is logged, not raised)."""
    for reporter in list(STATUS_REPORTERS):
        try:
            reporter()
        except Exception:
            log.exception("status report failed")


async def _run(start: StartFunction, keys: Keys) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stopped_by: list[int] = []

    def stop(signum: int) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stopped_by.append(signum)
        if task is not None:
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    loop.add_signal_handler(signal.SIGUSR1, report_status)
    try:
        async with AsyncExitStack() as devices:
            await start(keys, devices)
    except asyncio.CancelledError:
        if not stopped_by:
            raise
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(signum)
    if stopped_by and stopped_by[0] == signal.SIGINT:
        return 130
    return 0


def _loop_factory(keys: Keys) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the ``loop`` key chose (the unix socket stack declares
    it); None (asyncio's own) without the key."""
    choice = getattr(keys, "loop", None)
    if choice is None:
        return None
    from looming.event_loop import event_loop_factory

    return event_loop_factory(str(choice))


def main(name: str, specs: Sequence[KeySpec], start: StartFunction) -> NoReturn:
    """Parse the command line, set up logging, run ``start``, and exit."""
    argv = sys.argv[1:]
    if "--help" in argv or "-h" in argv:
        print(usage(name, specs))
        sys.exit(0)
    try:
        keys = parse_keys(specs, argv)
        configure_logging(getattr(keys, "logs", "*:info") or "*:info")
    except UsageError as exc:
        print(f"{name}: {exc}", file=sys.stderr)  # (an unknown key's names the valid ones)
        sys.exit(2)
    from looming.errors import ConfigError, LoomingError
    from looming.errors import UsageError as BadInput

    try:
        with asyncio.Runner(loop_factory=_loop_factory(keys)) as runner:
            code = runner.run(_run(start, keys))
    except KeyboardInterrupt:
        code = 130
    except (ConfigError, BadInput) as exc:
        # The user's input was wrong: say so plainly (the traceback only at debug level).
        log.debug("%s stopped", name, exc_info=True)
        print(f"{name}: {exc}", file=sys.stderr)
        code = 2
    except LoomingError as exc:
        # A device or protocol failure whose message says what to do.
        log.debug("%s stopped", name, exc_info=True)
        print(f"{name}: {exc}", file=sys.stderr)
        code = 1
    except Exception:
        log.critical("%s stopped on an unhandled error", name, exc_info=True)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.exit(code)


def app_path(relative: str) -> str:
    """``relative`` inside the application folder.

    A built artifact lives in ``<app>/dist/``; anything else resolves against
    the current directory.
    """
    from pathlib import Path

    artifact = Path(sys.argv[0]).resolve()
    if artifact.suffix == ".pyz" and artifact.parent.name == "dist":
        return str(artifact.parent.parent / relative)
    return str(Path.cwd() / relative)
