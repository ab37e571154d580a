"""Loading an application's ``config.py`` with errors that point into it."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from looming.config import dsl
from looming.config.devices import all_device_functions
from looming.errors import ConfigError


def load(app_dir: Path) -> dsl.Registry:
    """Execute ``app_dir/config.py`` and return what it registered.

    Any failure becomes a :class:`ConfigError` naming the file and line.
    """
    path = app_dir / "config.py"
    shown = str(path)
    if not path.is_file():
        raise ConfigError(
            f"no config.py in {app_dir}; run looming in an application folder "
            "(or pass --app DIR), see README.md for a minimal config.py"
        )
    source = path.read_text(encoding="utf-8")
    try:
        code = compile(source, shown, "exec")
    except SyntaxError as exc:
        raise ConfigError(f"syntax error: {exc.msg}", path=shown, line=exc.lineno or 1) from None
    registry = dsl.reset()
    namespace = {"__name__": "__looming_config__", "__file__": shown}
    sys.path.insert(0, str(app_dir))
    try:
        exec(code, namespace)
    except ConfigError as exc:
        if exc.path is None:
            exc.path = shown
        raise
    except Exception as exc:
        line = _line_in(exc, shown)
        raise ConfigError(_explain(exc), path=shown, line=line) from None
    finally:
        sys.path.remove(str(app_dir))
    if not registry.unikernels:
        raise ConfigError(
            "declares no unikernel; end it with register(NAME, [main('module:Name', [...])])",
            path=shown,
        )
    return registry


def _line_in(exc: BaseException, shown: str) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == shown:
            line = frame.lineno
    return line


def _explain(exc: Exception) -> str:
    if isinstance(exc, ImportError) and "from 'looming.config'" in str(exc):
        missing = str(exc).split("'")[1] if "'" in str(exc) else str(exc)
        valid = ", ".join([*all_device_functions(), "key", "main", "register"])
        return f"unknown device or function {missing!r} in looming.config; available: {valid}"
    if isinstance(exc, NameError):
        valid = ", ".join(all_device_functions())
        return f"{exc} (device functions must be imported from looming.config: {valid})"
    return f"{type(exc).__name__}: {exc}"
