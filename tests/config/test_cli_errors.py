"""Bad input to `looming`: one clear message naming the place, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.config.tooling import looming

UNIKERNEL = textwrap.dedent(
    """
    class App:
        def __init__(self, console, time, *, port):
            self.console = console

        async def start(self):
            await self.console.log("started")
    """
)


def make_app(tmp_path: Path, config: str, unikernel: str = UNIKERNEL) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "config.py").write_text(textwrap.dedent(config).lstrip())
    (app / "unikernel.py").write_text(unikernel)
    return app


def configure_fails(app: Path, *args: str) -> str:
    proc = looming(app, "configure", *args, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert not (app / "_build").exists(), "nothing may be written on error"
    assert proc.stdout == ""
    return proc.stderr


GOOD = """
    from looming.config import console, key, main, register, time
    port = key("port", int, default=80, doc="a port")
    register("app", [main("unikernel:App", [console(), time()], keys=[port])])
"""


def test_good_config_configures(tmp_path: Path) -> None:
    app = make_app(tmp_path, GOOD)
    assert looming(app, "configure").returncode == 0
    assert (app / "_build" / "unix" / "main.py").is_file()


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    app = make_app(tmp_path, "from looming.config import main\n\nx = (\n")
    err = configure_fails(app)
    assert f"{app / 'config.py'}:3: syntax error" in err


def test_failing_import_names_file_and_line(tmp_path: Path) -> None:
    app = make_app(tmp_path, "from looming.config import main\nimport not_a_module_here\n")
    err = configure_fails(app)
    assert f"{app / 'config.py'}:2: ModuleNotFoundError" in err


def test_unknown_device_lists_the_known_ones(tmp_path: Path) -> None:
    app = make_app(tmp_path, "from looming.config import main, teleporter\n")
    err = configure_fails(app)
    assert f"{app / 'config.py'}:1:" in err
    assert "unknown device or function 'teleporter'" in err
    assert "kv_ro" in err and "stack" in err


def test_non_device_in_main_names_the_line(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        """
        from looming.config import console, main, register
        register("app", [main("unikernel:App", [console(), "htdocs"])])
        """,
    )
    err = configure_fails(app)
    assert f"{app / 'config.py'}:2:" in err and "device #2 is 'htdocs'" in err


def test_unsatisfied_device_is_named(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        """
        from looming.config import console, key, main, register
        port = key("port", int, default=80)
        register("app", [main("unikernel:App", [console()], keys=[port])])
        """,
    )
    err = configure_fails(app)
    assert f"{app / 'config.py'}:3:" in err
    assert "unsatisfied: time" in err


def test_missing_key_parameter_is_unsatisfied(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        """
        from looming.config import console, main, register, time
        register("app", [main("unikernel:App", [console(), time()])])
        """,
    )
    err = configure_fails(app)
    assert "needs the key(s) port" in err


def test_missing_entry_point(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        """
        from looming.config import console, main, register
        register("app", [main("unikernel:Nope", [console()])])
        """,
    )
    err = configure_fails(app)
    assert "defines no class or function 'Nope' (it defines: App)" in err


def test_device_cycle_is_reported_with_lines(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        """
        from looming.config import console, device, main, register
        a = device("console", name="a", flavour="a")
        b = device("console", [a], name="b", flavour="b")
        a.requires(b)
        register("app", [main("unikernel:App", [a, b])])
        """,
    )
    err = configure_fails(app)
    assert "cycle" in err
    assert "config.py:2" in err and "config.py:3" in err


def test_device_the_target_lacks_is_unsatisfied(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        """
        from looming.config import device, main, register, console
        register("app", [main("unikernel:App", [console(), device("warp_drive")])])
        """,
    )
    err = configure_fails(app)
    assert f"{app / 'config.py'}:2:" in err
    assert "no implementation for device 'warp_drive'" in err


def test_unknown_target_lists_valid_ones(tmp_path: Path) -> None:
    app = make_app(tmp_path, GOOD)
    err = configure_fails(app, "-t", "mainframe")
    assert "unknown target 'mainframe'; valid targets:" in err and "unix" in err


def test_unknown_key_lists_valid_ones(tmp_path: Path) -> None:
    app = make_app(tmp_path, GOOD)
    err = configure_fails(app, "--colour", "red")
    assert "unknown key --colour; valid keys:" in err and "--port" in err


def test_bad_key_value_is_explained(tmp_path: Path) -> None:
    app = make_app(tmp_path, GOOD)
    err = configure_fails(app, "--port", "eighty")
    assert "--port" in err and "not a valid int" in err


def test_no_config_py(tmp_path: Path) -> None:
    proc = looming(tmp_path, "configure", check=False)
    assert proc.returncode == 2 and "no config.py" in proc.stderr


def test_build_and_run_before_configure(tmp_path: Path) -> None:
    app = make_app(tmp_path, GOOD)
    for verb in ("build", "run"):
        proc = looming(app, verb, check=False)
        assert proc.returncode == 2 and "looming configure" in proc.stderr
    looming(app, "configure")
    proc = looming(app, "run", check=False)
    assert proc.returncode == 2 and "looming build" in proc.stderr


@pytest.mark.parametrize("verb", ["configure", "build", "describe", "clean"])
def test_every_verb_has_help(tmp_path: Path, verb: str) -> None:
    proc = looming(tmp_path, verb, "--help")
    assert proc.stdout.startswith("usage: looming")


def test_top_level_help_documents_every_verb(tmp_path: Path) -> None:
    out = looming(tmp_path, "--help").stdout
    for verb in ("configure", "build", "run", "describe", "clean"):
        assert verb in out


def test_describe_text_and_dot(tmp_path: Path) -> None:
    app = make_app(tmp_path, GOOD)
    looming(app, "configure")
    text = looming(app, "describe").stdout
    assert "console" in text and "looming.unix.time:UnixTime" in text and "--port" in text
    dot = looming(app, "describe", "--dot").stdout
    assert dot.startswith('digraph "app" {') and '"job0" -> "time";' in dot


def test_direct_net_links_the_tap_and_looming_stack(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        """
        from looming.config import console, default_network, main, register, stack
        register("app", [main("unikernel:App", [console(), stack(default_network())])])
        """,
        "class App:\n    def __init__(self, console, stack):\n        pass\n",
    )
    looming(app, "configure", "--net", "direct")
    main_py = (app / "_build" / "unix" / "main.py").read_text()
    assert "net = await TapNetwork.connect(keys.interface, offload=keys.offload)" in main_py
    assert "stack = await DirectStack.connect(net, time=time, clock=clock, random=random" in main_py
    described = looming(app, "describe").stdout
    assert "stack    stack    looming.net.stack:DirectStack.connect" in described


def test_describe_image_lists_the_artifact(tmp_path: Path) -> None:
    app = make_app(tmp_path, GOOD)
    looming(app, "configure")
    proc = looming(app, "describe", "--image", check=False)
    assert proc.returncode == 2 and "looming build" in proc.stderr
    looming(app, "build")
    out = looming(app, "describe", "--image").stdout
    assert out.startswith("app-unix.pyz: ")
    assert "  __main__.py" in out and "  unikernel.py" in out


def test_plugin_verbs_load_only_when_used() -> None:
    code = (
        "import sys; from looming.cli import make_parser; make_parser('configure'); "
        "print(sorted(m for m in sys.modules if m.startswith(('looming.tls', 'looming.store', "
        "'looming.sim', 'cryptography'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
