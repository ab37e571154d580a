"""register(packages=...) is checked where it is written: a string, a name
that is no module, a package neither in the application folder nor
installed, or one of the standard library is an error at configure naming
config.py's line, never a surprise at build."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from looming.config import loader
from looming.errors import ConfigError
from tests.config.tooling import looming

UNIKERNEL = "class App:\n    def __init__(self, console):\n        pass\n"


def app_with(tmp_path: Path, packages: str) -> Path:
    app = tmp_path / "app"
    (app / "plugins").mkdir(parents=True)
    (app / "plugins" / "__init__.py").write_text("")
    (app / "helper.py").write_text("")
    (app / "unikernel.py").write_text(UNIKERNEL)
    (app / "config.py").write_text(
        textwrap.dedent(
            f"""\
            from looming.config import console, main, register

            job = main("unikernel:App", [console()])
            register("app", [job], packages={packages})
            """
        )
    )
    return app


@pytest.mark.parametrize(
    ("packages", "says"),
    [
        ('"plugins"', "must be a list of package names, e.g. packages=['plugins']"),
        ('["nosuchpkg_looming"]', "'nosuchpkg_looming' is not installed"),
        ('["plugins", "nosuchpkg_looming.sub"]', "'nosuchpkg_looming' is not installed"),
        ('["json"]', "'json' is in the standard library"),
        ('["plugins/extra"]', "'plugins/extra', which is not a module name"),
        ("[3]", "holds 3, which is not a module name"),
        ("None", "e.g. packages=['plugins'], not the NoneType None"),
        ('{"plugins"}', "not the set {'plugins'}"),
    ],
)
def test_bad_packages_name_the_register_line(tmp_path: Path, packages: str, says: str) -> None:
    app = app_with(tmp_path, packages)
    with pytest.raises(ConfigError) as raised:
        loader.load(app)
    assert raised.value.path == str(app / "config.py") and raised.value.line == 4
    assert says in raised.value.message, raised.value.message


@pytest.mark.parametrize(
    "packages", ['["plugins"]', '("plugins", "helper")', '["plugins.sub", "looming.http"]', "[]"]
)
def test_packages_of_the_app_folder_or_installed_are_taken(tmp_path: Path, packages: str) -> None:
    app = app_with(tmp_path, packages)
    (unikernel,) = loader.load(app).unikernels
    assert unikernel.packages == list(eval(packages))


def test_configure_refuses_an_unknown_package_with_exit_2(tmp_path: Path) -> None:
    app = app_with(tmp_path, '["nosuchpkg_looming"]')
    proc = looming(app, "configure", "-t", "unix", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{app / 'config.py'}:4: register('app'): packages=['nosuchpkg_looming']" in proc.stderr
    assert "Traceback" not in proc.stderr and not (app / "_build").exists()
