"""configure checks each device against the interface its parameter is
annotated with: a read-only store for a KvRw parameter, or two devices
swapped, is reported with config.py's line and the parameter's, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.tooling import looming

HEADER = "from looming.devices import Console, KvRo, KvRw, Stack\n\n\n"


def make_app(folder: Path, signature: str, devices: str) -> Path:
    folder.mkdir()
    (folder / "data").mkdir()
    (folder / "unikernel.py").write_text(
        HEADER + f"class App:\n    def __init__(self, {signature}) -> None:\n"
        "        pass\n\n    async def start(self) -> None:\n        pass\n"
    )
    (folder / "config.py").write_text(
        "from looming.config import console, default_network, kv_ro, kv_rw, main, register, stack\n"
        f'register("app", [main("unikernel:App", [{devices}])])\n'
    )
    return folder


def test_read_only_store_for_a_read_write_parameter(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", "console: Console, store: KvRw", 'console(), kv_ro("data")')
    done = looming(app, "configure", "-t", "unix", check=False)
    assert done.returncode == 2
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1
    assert f"{app / 'config.py'}:2" in message
    assert f"{app / 'unikernel.py'}:5" in message  # the parameter's line
    assert "'store'" in message and "KvRw" in message and "read-write store" in message
    assert not (app / "_build" / "unix" / "main.py").exists()


def test_swapped_devices_are_named_as_such(tmp_path: Path) -> None:
    app = make_app(
        tmp_path / "app",
        "console: Console, store: KvRo, stack: Stack",
        'console(), stack(default_network()), kv_ro("data")',
    )
    done = looming(app, "configure", "-t", "unix", check=False)
    assert done.returncode == 2
    assert "device #2" in done.stderr and "swapped" in done.stderr


@pytest.mark.parametrize(
    ("signature", "devices"),
    [
        # A read-write store is also a read-only one.
        ("console: Console, store: KvRo", 'console(), kv_rw("data")'),
        ("console: Console, store: KvRw | None = None", 'console(), kv_rw("data")'),
        ('console: "Console", store: "KvRw"', 'console(), kv_rw("data")'),
        # Unannotated or annotated with something else: not checked.
        ("console, store", 'console(), kv_ro("data")'),
        ("console: object, store: int", 'console(), kv_ro("data")'),
    ],
)
def test_fitting_or_unannotated_devices_configure(
    tmp_path: Path, signature: str, devices: str
) -> None:
    app = make_app(tmp_path / "app", signature, devices)
    looming(app, "configure", "-t", "unix")
    assert (app / "_build" / "unix" / "main.py").is_file()


def test_an_async_function_entry_point_is_checked_too(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", "console: Console", "console()")
    (app / "unikernel.py").write_text(
        HEADER + "async def app(console: Console, store: KvRw) -> None:\n    pass\n"
    )
    (app / "config.py").write_text(
        "from looming.config import console, kv_ro, main, register\n"
        'register("app", [main("unikernel:app", [console(), kv_ro("data")])])\n'
    )
    done = looming(app, "configure", "-t", "unix", check=False)
    assert done.returncode == 2 and "KvRw" in done.stderr
