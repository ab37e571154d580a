"""The times stamped on the application's files packed beside it.

A server derives Last-Modified and often its ETag from a file's time
(Starlette's ``StaticFiles`` hashes the time and the size), so a packed
file's time must change when its content does, or a client keeps a stale
copy that the server confirms with 304. It must also be the same in every
clone of one commit, so builds stay byte-identical. The time, in order:

* ``SOURCE_DATE_EPOCH`` when it is set (every file);
* in a git checkout, for a file committed and unchanged in the working tree,
  the commit time of ``HEAD`` (``git log -1 --format=%ct``): the same in
  every clone, and later for every later commit;
* otherwise (a file untracked or modified, or no git) the file's own time;
  in a git checkout such files make the build not reproducible, which the
  build says once.

Zip entries hold times from 1980 to 2107 in 2-second steps (UTC here, as
the artifact's loader reads them back).
"""

from __future__ import annotations

import calendar
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from looming.errors import ConfigError

ZIP_FIRST = calendar.timegm((1980, 1, 1, 0, 0, 0))
ZIP_LAST = calendar.timegm((2107, 12, 31, 23, 59, 58))


@dataclass
class PackedTimes:
    """Each packed file's time (name relative to the application: POSIX
    seconds) and the names whose time no clone would share."""

    times: dict[str, int] = field(default_factory=dict)
    unreproducible: list[str] = field(default_factory=list)

    def notice(self) -> str | None:
        """The build's one warning about them, or None."""
        if not self.unreproducible:
            return None
        names = self.unreproducible
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return (
            f"this build is not reproducible: {shown} untracked or modified in git, "
            "packed with their own times; commit them, or set SOURCE_DATE_EPOCH"
        )


def zip_date_time(seconds: int) -> tuple[int, int, int, int, int, int]:
    """A zip entry's date_time for ``seconds`` (UTC, within the zip's range)."""
    moment = time.gmtime(min(max(seconds, ZIP_FIRST), ZIP_LAST))
    return (
        moment.tm_year,
        moment.tm_mon,
        moment.tm_mday,
        moment.tm_hour,
        moment.tm_min,
        moment.tm_sec,
    )


def source_date_epoch() -> int | None:
    """``SOURCE_DATE_EPOCH`` as seconds, None when unset or empty."""
    given = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not given:
        return None
    if not given.isdigit():
        raise ConfigError(
            f"SOURCE_DATE_EPOCH={given!r} is not a count of seconds since 1970; "
            "set it to one (git log -1 --format=%ct) or unset it"
        )
    return int(given)


def _git(folder: Path, *args: str) -> str | None:
    """git's output for ``args`` run in ``folder``; None if it fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _committed_and_clean(folder: Path) -> tuple[Path, int, set[str]] | None:
    """For a git checkout holding ``folder``: its top, HEAD's commit time,
    and the files under ``folder`` (relative to the top) that are committed
    and unchanged in the working tree and the index. None outside git or
    without a commit."""
    top = _git(folder, "rev-parse", "--show-toplevel")
    head = _git(folder, "log", "-1", "--format=%ct", "HEAD")
    tracked = _git(folder, "ls-files", "-z", "--full-name", "--", ".")
    changed = _git(folder, "diff", "--name-only", "-z", "HEAD", "--", ".")
    if top is None or head is None or tracked is None or changed is None:
        return None
    if not head.strip().isdigit():
        return None
    clean = set(tracked.split("\0")) - set(changed.split("\0")) - {""}
    return Path(top.strip()).resolve(), int(head.strip()), clean


def packed_times(app_dir: Path, files: dict[str, Path]) -> PackedTimes:
    """The times of ``files`` (name relative to ``app_dir``: the file), by
    the rules of the module's notes."""
    result = PackedTimes()
    epoch = source_date_epoch()
    if epoch is not None:
        result.times = dict.fromkeys(files, epoch)
        return result
    git = _committed_and_clean(app_dir) if files else None
    for name, path in sorted(files.items()):
        resolved = path.resolve()
        if git is not None:
            top, head, clean = git
            inside = resolved.is_relative_to(top)
            if inside and resolved.relative_to(top).as_posix() in clean:
                result.times[name] = head
                continue
            result.unreproducible.append(name)
        result.times[name] = int(resolved.stat().st_mtime)
    return result
