"""The HTTP memos stay within their bounds and answer what an unmemoised
path would: prepared response heads and the static site's resolved targets."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from looming.http import StaticSite
from looming.http.message import Request
from looming.http.response_head import HeaderCache, prepare_headers

from .serving import MemoryKv

HEADER_TUPLES = st.lists(
    st.tuples(
        st.sampled_from([(b"content-type", b"text/plain"), (b"x-a", b"1"), (b"x-b", b"2")]),
        st.sampled_from([(b"server", b"looming"), (b"x-c", b"3")]),
    ),
    max_size=30,
)


@given(HEADER_TUPLES, st.integers(min_value=1, max_value=4))
def test_prepared_heads_are_bounded_and_right(
    sequence: list[tuple[tuple[bytes, bytes], ...]], bound: int
) -> None:
    cache = HeaderCache(max_entries=bound)
    for headers in sequence:
        assert cache.prepare(headers) == prepare_headers(headers)
        assert len(cache._prepared) <= bound


def test_static_site_resolves_again_after_its_memo_is_emptied() -> None:
    kv = MemoryKv({"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"})
    site = StaticSite(kv, max_cached_targets=2)

    async def fetch(target: str) -> bytes:
        response = await site(Request("GET", target, ()))
        assert response.status == 200
        body = response.body
        assert isinstance(body, bytes)
        return body

    async def run() -> None:
        for _ in range(3):
            for name in ("a", "b", "c"):
                assert await fetch(f"/{name}.txt") == name.encode()
                assert len(site._by_target) <= 2
        asked = len(kv.keys_asked)
        assert await fetch("/c.txt") == b"c"  # remembered: the store is not asked
        assert len(kv.keys_asked) == asked

    asyncio.run(run())
