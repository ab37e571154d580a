"""kv_store in config.py: a unikernel's KvRw kept as a Git repository."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from tests.config.tooling import looming

CONFIG = """
from looming.config import console, key, kv_store, main, register
note = key("note", str, default="first", doc="what to store")
register("notes", [main("unikernel:Notes", [console(), kv_store("notes.git")], keys=[note])])
"""

UNIKERNEL = """
class Notes:
    def __init__(self, console, store, *, note):
        self.console, self.store, self.note = console, store, note

    async def start(self):
        await self.store.set("notes/latest.txt", self.note.encode())
        value = await self.store.get("notes/latest.txt")
        await self.console.log("stored " + value.decode())
"""


def test_kv_store_commits_to_a_git_repository(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "config.py").write_text(textwrap.dedent(CONFIG).lstrip())
    (app / "unikernel.py").write_text(UNIKERNEL)
    looming(app, "configure")
    main_py = (app / "_build" / "unix" / "main.py").read_text()
    assert "clock = UnixClock()" in main_py
    assert (
        "await StoreKv.connect(keys.notes_git_repo, clock=clock, branch=keys.notes_git_branch)"
        in main_py
    )
    looming(app, "build")
    assert looming(app, "run").stdout == "stored first\n"
    assert looming(app, "run", "--note", "second").stdout == "stored second\n"
    repo = app / "notes.git"

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True
        ).stdout

    git("fsck", "--strict")
    assert git("show", "main:notes/latest.txt") == "second"
    assert len(git("log", "--format=%H", "main").split()) == 2
    # The branch is a key too.
    looming(app, "run", "--notes-git-branch", "drafts", "--note", "draft")
    assert git("show", "drafts:notes/latest.txt") == "draft"
