"""`import __main__` in a packed package (Django's autoreloader has one) and
modules whose lookup fails: the build packs the first as the interpreter's
own and names the second in one line, exit 2, never a traceback."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path

import pytest

from looming.config.build import ModuleLocator, module_closure
from looming.errors import ConfigError
from tests.config.tooling import looming

UNIKERNEL = "import plug\n\nclass App:\n    def __init__(self, console):\n        pass\n"


def app_with_plug(tmp_path: Path, plug_source: str) -> Path:
    app = tmp_path / "app"
    (app / "plug").mkdir(parents=True)
    (app / "plug" / "__init__.py").write_text(plug_source)
    (app / "unikernel.py").write_text(UNIKERNEL)
    (app / "config.py").write_text(
        textwrap.dedent(
            """\
            from looming.config import console, main, register

            register("mi", [main("unikernel:App", [console()])], packages=["plug"])
            """
        )
    )
    return app


def test_a_package_importing_main_builds(tmp_path: Path) -> None:
    app = app_with_plug(tmp_path, "def f():\n    import __main__\n    return __main__\n")
    looming(app, "configure", "-t", "unix")
    proc = looming(app, "build", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (app / "dist" / "mi-unix.pyz").is_file()


def test_main_is_never_a_module_to_pack(tmp_path: Path) -> None:
    entry = tmp_path / "main.py"
    entry.write_text("import plug\n")
    (tmp_path / "plug.py").write_text("import __main__\nimport __mp_main__\n")
    closure = module_closure(entry, tmp_path, ("plug",))
    assert set(closure.modules) == {"__main__", "plug"}
    assert not closure.missing and not closure.external


def test_a_module_whose_lookup_fails_is_named_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = types.ModuleType("looming_broken_spec")
    broken.__spec__ = None  # find_spec raises ValueError for it
    monkeypatch.setitem(sys.modules, "looming_broken_spec", broken)
    with pytest.raises(ConfigError) as raised:
        ModuleLocator(tmp_path).find("looming_broken_spec.sub")
    message = str(raised.value)
    assert "'looming_broken_spec'" in message and "\n" not in message


def test_an_unreadable_module_is_named_exit_2(tmp_path: Path) -> None:
    app = app_with_plug(tmp_path, "")
    (app / "plug" / "bad.py").write_text("def broken(:\n")
    looming(app, "configure", "-t", "unix")
    proc = looming(app, "build", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "plug.bad" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (app / "dist").exists()
