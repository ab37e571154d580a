"""What the user reads: one-line key errors."""

from __future__ import annotations

from typing import Any

import pytest

from looming import runtime


def _never(keys: Any, stack: Any) -> Any:
    raise AssertionError("not started with a bad key")


def test_a_bad_key_of_run_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = [runtime.KeySpec("port", "int", 8080, "TCP port")]
    monkeypatch.setattr("sys.argv", ["app.pyz", "--port", "99999"])
    with pytest.raises(SystemExit) as stopped:
        runtime.main("app.pyz", specs, _never)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "app.pyz: --port: 99999 is not a port number (0 to 65535)"
    ]
