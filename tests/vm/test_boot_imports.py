"""What a unikernel imports at boot: nothing it does not use to serve.

Each module imported at boot costs a VM guest under emulation 15 to 35
times what it costs here. These check that a static-address IPv4 stack,
a crunched kv_ro and the address helpers leave out what only other
configurations need (IPv6, zipfile, argparse), and that the crunched
kv_ro read through the running zipapp's own importer holds what zipfile
reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from looming.unix import kv

IMPORTED_AT_BOOT = [
    "looming.runtime",
    "looming.net.stack",
    "looming.unix.kv",
    "looming.unix.clock",
    "looming.unix.console",
    "looming.unix.random",
    "looming.unix.time",
    "looming.addresses",
    "looming.http",
]
NOT_AT_BOOT = [
    "looming.net.ipv6",
    "looming.net.slaac",
    "looming.net.wire.ndp",
    "zipfile",
    "argparse",
]

SITE = {"index.html": b"<h1>hi</h1>", "css/site.css": b"body {}", "empty": b""}

# Run with the zipapp holding a copy of looming.unix.kv on the path: its
# CrunchedKv finds the archive it runs from, as a unikernel's does.
READ_FROM_ARCHIVE = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
import kvcopy
assert type(kvcopy.__loader__).__name__ == "zipimporter"
store = kvcopy.CrunchedKv.load("site")
async def dump():
    keys = ["index.html", "css/site.css", "empty"]
    return {key: [(await store.get(key)).hex(), await store.digest(key)] for key in keys}
out = asyncio.run(dump())
try:
    kvcopy.CrunchedKv.load("absent")
except KeyError:
    out["absent"] = "KeyError"
print(json.dumps({"values": out, "zipfile": "zipfile" in sys.modules}))
"""


def test_boot_modules_leave_out_ipv6_zipfile_and_argparse() -> None:
    program = "import sys\n" + "".join(f"import {m}\n" for m in IMPORTED_AT_BOOT)
    program += f"print(sorted(set({NOT_AT_BOOT!r}) & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    manifest, files = {"files": {}}, {}
    for rel, data in SITE.items():
        files[f"{kv.MANIFEST_DIR}/site/{rel}"] = data
        manifest["files"][rel] = {"size": len(data), "sha256": rel, "mtime": 1.0}  # type: ignore[index]
    path = tmp_path / "app.pyz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as out:
        out.writestr("kvcopy.py", Path(kv.__file__).read_text())
        out.writestr(f"{kv.MANIFEST_DIR}/site.json", json.dumps(manifest))
        for name, data in files.items():
            out.writestr(name, data)
    return path


def test_crunched_kv_read_through_the_running_zipapp_matches_zipfile(archive: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", READ_FROM_ARCHIVE, str(archive)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answer = json.loads(done.stdout)
    assert not answer["zipfile"]  # read by the zipimporter alone
    store = kv.CrunchedKv.load("site", str(archive))  # another archive: zipfile
    for key, expected in SITE.items():
        value, digest = answer["values"][key]
        assert bytes.fromhex(value) == expected
        assert digest == key  # the manifest's, as recorded
    assert answer["values"]["absent"] == "KeyError"
    with pytest.raises(KeyError):
        kv.CrunchedKv.load("absent", str(archive))
    assert sorted(answer["values"]) == sorted([*SITE, "absent"])
    assert store._values.keys() == {tuple(k.split("/")) for k in SITE}
