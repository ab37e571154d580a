from __future__ import annotations

from collections.abc import Iterator

import pytest

from looming.http import StaticSite

from .serving import HTDOCS, MemoryKv, RunningServer, serve_in_thread


@pytest.fixture(scope="module")
def site_kv() -> MemoryKv:
    kv = MemoryKv.from_folder(HTDOCS)
    # Planted where only an escape from the site could reach them.
    kv.files["../secret.txt"] = b"SECRET outside the site\n"
    kv.files["..\\secret.txt"] = b"SECRET outside the site\n"
    kv.files["/etc/passwd"] = b"SECRET root:x:0:0\n"
    return kv


@pytest.fixture(scope="module")
def site(site_kv: MemoryKv) -> Iterator[RunningServer]:
    with serve_in_thread(lambda: StaticSite(site_kv, max_cached_file_bytes=64 * 1024)) as running:
        yield running
