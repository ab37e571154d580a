"""Fixtures for the FFI tests: one compile cache per session, libraries per backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from looming.ffi import BACKENDS, Bindings, LinkedLibrary, link
from looming.ffi.confine import Confinement
from looming.ffi.libs.crypt import crypt
from looming.ffi.libs.libc import libc
from looming.ffi.libs.sqlite3 import sqlite3
from looming.ffi.libs.zlib import zlib
from looming.unix.time import UnixTime


@pytest.fixture(scope="session", autouse=True)
def ffi_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Compiled bindings and layout probes go to a per-session directory."""
    directory = tmp_path_factory.mktemp("looming-ffi-cache")
    before = os.environ.get("LOOMING_FFI_CACHE")
    os.environ["LOOMING_FFI_CACHE"] = str(directory)
    yield directory
    if before is None:
        del os.environ["LOOMING_FFI_CACHE"]
    else:
        os.environ["LOOMING_FFI_CACHE"] = before


def files_confinement(tmp_path_factory: pytest.TempPathFactory) -> Confinement:
    """Every layer, but the tests' own files (root's, under pytest's base folder) open to the helper."""
    base = str(tmp_path_factory.getbasetemp())
    return Confinement(user=None, writable_paths=(base,))


@pytest.fixture(scope="session")
def linked(
    ffi_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[Bindings, str], LinkedLibrary]]:
    """Link a description once per backend for the whole session."""
    libraries: dict[tuple[str, str], LinkedLibrary] = {}
    confinement = files_confinement(tmp_path_factory)

    def get(bindings: Bindings, backend: str) -> LinkedLibrary:
        key = (bindings.name, backend)
        if key not in libraries:
            options = {"confinement": confinement} if backend == "isolated" else {}
            libraries[key] = link(bindings, backend, **options, time=UnixTime())
        return libraries[key]

    yield get
    for library in libraries.values():
        library.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def z(linked: Callable[[Bindings, str], LinkedLibrary], backend: str) -> LinkedLibrary:
    return linked(zlib, backend)


@pytest.fixture
def c(linked: Callable[[Bindings, str], LinkedLibrary], backend: str) -> LinkedLibrary:
    return linked(libc, backend)


@pytest.fixture
def sq(linked: Callable[[Bindings, str], LinkedLibrary], backend: str) -> LinkedLibrary:
    return linked(sqlite3, backend)


@pytest.fixture
def cr(linked: Callable[[Bindings, str], LinkedLibrary], backend: str) -> LinkedLibrary:
    return linked(crypt, backend)
