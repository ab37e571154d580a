"""The boot cache: dataclass functions and patterns compiled at build time;
and no garbage collection while the unikernel imports.

The cache is recorded from a small zipapp by a child interpreter, as the
image build does, and used by /init's own code (``use_boot_cache``) in
child interpreters: what the unikernel's classes and patterns do must not
change, the cache must be what answers, and a text it does not hold (or a
cache from another layout) must be compiled as before.
"""

from __future__ import annotations

import _sre
import gc
import importlib.util
import json
import marshal
import re
import subprocess
import sys
import sysconfig
import threading
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.vm import bootcache
from looming.vm.image import GUEST_PYTHON

INIT = Path(bootcache.__file__).with_name("init.py")
# The build makes a cache only when its Python is the guest's (Debian 12's
# 3.11): other versions write other texts (3.13 one per class).
guest_python_only = pytest.mark.skipif(
    f"{sys.version_info[0]}.{sys.version_info[1]}" != GUEST_PYTHON,
    reason=f"the boot cache is made and used only by Python {GUEST_PYTHON}, the guest's",
)
STDLIB = Path(sysconfig.get_paths()["stdlib"])

APP_MODULE = '''
import dataclasses
import re
from dataclasses import dataclass, field

@dataclass(frozen=True, slots=True, order=True)
class Point:
    x: int
    y: int = 0

@dataclass
class Bag:
    name: str
    items: list[int] = field(default_factory=list)
    hidden: int = field(default=3, repr=False, compare=False)

@dataclass(kw_only=True, eq=False)
class Options:
    verbose: bool = False
    level: int = 1

TOKEN = re.compile(rb"(?P<name>[-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \\t]*(?P<value>[^\\r\\n]*)")
WORDS = re.compile(r"""(?ix) \\b (?: hello | wor(ld)+ ) \\b""")
DIGITS = re.compile(r"[0-9]{2,4}")

def exercise():
    a, b = Point(1, 2), Point(1)
    bag = Bag("b", [1, 2])
    return [
        repr(a), repr(b), a < b, a == Point(1, 2), hash(a) == hash(Point(1, 2)),
        repr(bag), bag == Bag("b", [1, 2], hidden=9), Bag("c").items,
        repr(Options(level=2)), Options() == Options(),
        TOKEN.match(b"Content-Type:  text/html\\r\\n").groupdict() == {
            "name": b"Content-Type", "value": b"text/html"},
        WORDS.findall("HELLO there, Worldld! world"), DIGITS.findall("1 22 333 55555"),
        TOKEN.flags, WORDS.flags, WORDS.groupindex == {}, TOKEN.groups,
    ]
'''
MAIN = "import json\nimport appmod\n"

# A child: /init's functions, the cache in use (when given), appmod exercised.
CHILD = r"""
import json, runpy, sys
archive, cache = sys.argv[1], sys.argv[2]
sys.path.insert(0, archive)
init = runpy.run_path(sys.argv[3], run_name="looming_init")
init["CONFIG"]["boot_cache_version"] = int(sys.argv[4])
if cache:
    init["use_boot_cache"](cache)
import dataclasses, re, appmod
print(json.dumps({
    "cached": dataclasses.__dict__.get("exec") is not None,
    "results": [repr(r) for r in appmod.exercise()],
}))
"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bootcache") / "app.pyz"
    with zipfile.ZipFile(path, "w") as out:
        out.writestr("__main__.py", MAIN)
        out.writestr("appmod.py", APP_MODULE)
    return path


@pytest.fixture(scope="module")
def cache(archive: Path) -> bytes:
    recorded = bootcache.record(archive, STDLIB, ["appmod"])
    assert recorded is not None
    return recorded


def _child(archive: Path, cache_path: Path | None, version: int = bootcache.VERSION) -> dict:
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", CHILD, str(archive), str(cache_path or ""), str(INIT),
         str(version)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    answer: dict = json.loads(done.stdout)
    return answer


@guest_python_only
def test_the_cache_holds_the_apps_generated_functions_and_patterns(cache: bytes) -> None:
    content = marshal.loads(cache)
    assert content["version"] == bootcache.VERSION
    texts = content["functions"]
    assert any("def __init__(self,x:_type_x,y:_type_y=_dflt_y)" in t for t in texts)
    assert any("def __init__(self,*,verbose" in t for t in texts)  # kw_only
    for source, code in texts.items():  # what the guest would have compiled itself
        assert code.co_code == compile(source, "<string>", "exec", dont_inherit=True).co_code
    patterns = content["patterns"]
    assert (r"[0-9]{2,4}", 0) in patterns
    assert any(isinstance(key[0], bytes) and key[0].startswith(b"(?P<name>") for key in patterns)
    assert content["re_magic"] == re._compiler.MAGIC  # type: ignore[attr-defined]
    assert bootcache.summary(cache).endswith(f"{len(patterns)} patterns")


@guest_python_only
def test_classes_and_patterns_behave_the_same_with_the_cache(
    archive: Path, cache: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "cache"
    path.write_bytes(cache)
    without = _child(archive, None)
    with_cache = _child(archive, path)
    assert with_cache["cached"] and not without["cached"]
    assert with_cache["results"] == without["results"]
    assert without["results"][12] == repr(["22", "333", "5555"])  # DIGITS.findall


@guest_python_only
def test_the_cache_is_what_answers_for_exactly_the_recorded_text(
    archive: Path, cache: bytes, tmp_path: Path
) -> None:
    content = marshal.loads(cache)
    # A tampered entry shows whether the cache answered: Point's __repr__
    # and DIGITS' compiled form are swapped for others.
    (source,) = [t for t in content["functions"] if "def __repr__" in t and ".x!r" in t]
    content["functions"][source] = compile(
        "def __create_fn__():\n def __repr__(self): return 'from the cache'\n return __repr__",
        "<string>",
        "exec",
    )
    words = next(a for (p, _f), a in content["patterns"].items() if "hello" in str(p))
    content["patterns"][(r"[0-9]{2,4}", 0)] = words
    path = tmp_path / "cache"
    path.write_bytes(marshal.dumps(content))
    results = _child(archive, path)["results"]
    assert results[0] == repr("from the cache")
    assert results[12] == repr([])  # DIGITS made with the words' code: no match in digits
    # A cache of another layout is not used at all.
    assert not _child(archive, path, version=bootcache.VERSION + 1)["cached"]
    # Nor a damaged one.
    path.write_bytes(marshal.dumps(content)[:100])
    assert not _child(archive, path)["cached"]


@guest_python_only
@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="0123456789 helowrdHELOWRD-:\t\r\nab", max_size=40))
def test_patterns_made_from_the_cache_match_as_compiled_ones(cache: bytes, text: str) -> None:
    for (pattern, flags), arguments in marshal.loads(cache)["patterns"].items():
        made = _sre.compile(pattern, *arguments)
        compiled = re.compile(pattern, flags)
        subject: str | bytes = text if isinstance(pattern, str) else text.encode()
        assert made.flags == compiled.flags and made.groupindex == compiled.groupindex
        assert made.findall(subject) == compiled.findall(subject)  # type: ignore[arg-type]
        found, expected = made.search(subject), compiled.search(subject)  # type: ignore[arg-type]
        assert (found and found.span()) == (expected and expected.span())


class _Clock:
    """time for /init's collector watch: each sleep waits for the test's tick."""

    def __init__(self) -> None:
        self.now = 0.0
        self.asleep = threading.Semaphore(0)
        self.tick = threading.Semaphore(0)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, _seconds: float) -> None:
        self.asleep.release()
        self.tick.acquire()


def _init_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("looming_init_under_test", INIT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("reason", ["imports stopped", "time limit"])
def test_garbage_collection_comes_back_when_imports_stop_or_at_the_limit(reason: str) -> None:
    init = _init_module()
    clock = _Clock()
    init.time = clock  # type: ignore[attr-defined]
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        init.collect_garbage_after_imports(poll=0.5, limit=30.0)
        watcher = next(t for t in threading.enumerate() if t.name == "looming-gc")
        for step in range(3):  # a module imported during each interval
            clock.asleep.acquire()
            sys.modules[f"_looming_test_import_{reason[0]}{step}"] = ModuleType("imported")
            clock.tick.release()
        clock.asleep.acquire()
        assert not gc.isenabled()
        if reason == "time limit":
            clock.now = 31.0
            sys.modules["_looming_test_import_late"] = ModuleType("imported")
        clock.tick.release()
        watcher.join(timeout=10)
        assert not watcher.is_alive() and gc.isenabled()
    finally:
        for name in [n for n in sys.modules if n.startswith("_looming_test_import_")]:
            del sys.modules[name]
        (gc.enable if was_enabled else gc.disable)()
