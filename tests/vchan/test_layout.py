"""The shared page against Xen's definition of it, and geometry validation."""

from __future__ import annotations

import mmap
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from looming.vchan import layout
from looming.vchan.errors import VchanCorrupt
from looming.vchan.ring import RingEnd

# struct vchan_interface as xen/io/libxenvchan.h documents it (x86-64, native order).
DOCUMENTED = {
    "left.cons": 0,
    "left.prod": 4,
    "right.cons": 8,
    "right.prod": 12,
    "left_order": 16,
    "right_order": 18,
    "cli_live": 20,
    "srv_live": 21,
    "cli_notify": 22,
    "srv_notify": 23,
    "grants": 24,
    "sizeof": 24,
    "VCHAN_NOTIFY_WRITE": 1,
    "VCHAN_NOTIFY_READ": 2,
}

OURS = {
    "left.cons": layout.LEFT_CONS,
    "left.prod": layout.LEFT_PROD,
    "right.cons": layout.RIGHT_CONS,
    "right.prod": layout.RIGHT_PROD,
    "left_order": layout.LEFT_ORDER,
    "right_order": layout.RIGHT_ORDER,
    "cli_live": layout.CLI_LIVE,
    "srv_live": layout.SRV_LIVE,
    "cli_notify": layout.CLI_NOTIFY,
    "srv_notify": layout.SRV_NOTIFY,
    "grants": layout.GRANTS,
    "sizeof": layout.HEADER_SIZE,
    "VCHAN_NOTIFY_WRITE": layout.NOTIFY_WRITE,
    "VCHAN_NOTIFY_READ": layout.NOTIFY_READ,
}

# A C program built against Xen's own header: it prints the struct's offsets,
# then reads a segment file we wrote and prints what the header says, and
# finally moves an index and sets a notify bit the way a C peer would.
C_PROBE = r"""
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xen/io/libxenvchan.h>

#define OFF(f) printf(#f " %zu\n", offsetof(struct vchan_interface, f))

int main(int argc, char **argv) {
    OFF(left.cons); OFF(left.prod); OFF(right.cons); OFF(right.prod);
    OFF(left_order); OFF(right_order); OFF(cli_live); OFF(srv_live);
    OFF(cli_notify); OFF(srv_notify); OFF(grants);
    printf("sizeof %zu\n", sizeof(struct vchan_interface));
    printf("VCHAN_NOTIFY_WRITE %d\nVCHAN_NOTIFY_READ %d\n", VCHAN_NOTIFY_WRITE, VCHAN_NOTIFY_READ);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 2;
    struct vchan_interface *v = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (v == MAP_FAILED) return 3;
    printf("value.left.prod %u\nvalue.right.cons %u\n", v->left.prod, v->right.cons);
    printf("value.left_order %u\nvalue.right_order %u\n", v->left_order, v->right_order);
    printf("value.cli_live %u\nvalue.srv_live %u\n", v->cli_live, v->srv_live);
    printf("value.cli_notify %u\nvalue.srv_notify %u\n", v->cli_notify, v->srv_notify);
    for (int i = 0; i < 3; i++) printf("value.grants%d %u\n", i, v->grants[i]);
    v->right.prod += 7;
    v->cli_notify |= VCHAN_NOTIFY_READ;
    return 0;
}
"""


def xen_include_dir() -> Path | None:
    """Where xen/io/libxenvchan.h is: $LOOMING_XEN_INCLUDE, or the system's."""
    for candidate in (os.environ.get("LOOMING_XEN_INCLUDE"), "/usr/include"):
        if candidate and (Path(candidate) / "xen/io/libxenvchan.h").is_file():
            return Path(candidate)
    return None


def test_offsets_match_the_documented_struct() -> None:
    assert OURS == DOCUMENTED


def test_offsets_and_bytes_match_xens_header_compiled_with_gcc(tmp_path: Path) -> None:
    include = xen_include_dir()
    gcc = shutil.which("gcc")
    if include is None or gcc is None:
        # Without Xen's header (libxen-dev) or gcc, the documented table is
        # the reference; say so in the output rather than pretend.
        print("libxenvchan.h or gcc not available: checked against the documented offsets")
        assert OURS == DOCUMENTED
        return
    source = tmp_path / "probe.c"
    source.write_text(C_PROBE)
    binary = tmp_path / "probe"
    subprocess.run([gcc, "-O1", "-I", str(include), str(source), "-o", str(binary)], check=True)

    # A server header with one in-page ring and one of two pages.
    geometry = layout.plan(11, 13)
    segment_file = tmp_path / "segment"
    segment_file.write_bytes(bytes(geometry.segment_size))
    with segment_file.open("r+b") as handle:
        mapping = mmap.mmap(handle.fileno(), geometry.segment_size)
        view = memoryview(mapping)
        layout.initialize(view, geometry)
        struct.pack_into("=I", view, layout.LEFT_PROD, 1000)
        view.release()
        mapping.close()

    output = subprocess.run(
        [str(binary), str(segment_file)], check=True, capture_output=True, text=True
    ).stdout
    printed = dict(line.rsplit(" ", 1) for line in output.splitlines())
    assert {k: int(printed[k]) for k in DOCUMENTED} == OURS
    assert int(printed["value.left_order"]) == 11
    assert int(printed["value.right_order"]) == 13
    assert int(printed["value.left.prod"]) == 1000
    assert int(printed["value.right.cons"]) == 0
    assert int(printed["value.cli_live"]) == layout.LIVE_WAITING
    assert int(printed["value.srv_live"]) == layout.LIVE_CONNECTED
    assert int(printed["value.cli_notify"]) == layout.NOTIFY_WRITE
    assert int(printed["value.srv_notify"]) == 0
    # The right ring's two pages follow the header page: grants 1 and 2.
    assert [int(printed[f"value.grants{i}"]) for i in range(2)] == [1, 2]

    # What the C peer wrote reads back through the ring code.
    with segment_file.open("r+b") as handle:
        mapping = mmap.mmap(handle.fileno(), geometry.segment_size)
        view = memoryview(mapping)
        client = RingEnd(view, layout.parse(view), is_server=False)
        assert client.data_ready() == 7
        assert view[layout.CLI_NOTIFY] == layout.NOTIFY_WRITE | layout.NOTIFY_READ
        client.release()
        view.release()
        mapping.close()


@pytest.mark.parametrize(
    ("requested", "orders"),
    [
        (1023, (10, 11)),
        (1024, (10, 11)),
        (2047, (11, 12)),
        (2048, (11, 12)),
        (4095, (12, 12)),
        (4096, (12, 12)),
        (4097, (13, 13)),
        (0, (10, 11)),
        (1 << 20, (20, 20)),
    ],
)
def test_requested_sizes_round_up_like_libxenvchan(requested: int, orders: tuple[int, int]) -> None:
    chosen = layout.choose_orders(requested, requested)
    assert chosen == orders
    assert all(1 << order >= requested for order in chosen)


def test_asymmetric_sizes_use_both_in_page_slots() -> None:
    assert layout.choose_orders(2048, 1024) == (11, 10)
    assert layout.choose_orders(5000, 100) == (13, 11)
    assert layout.choose_orders(100, 5000) == (11, 13)


@pytest.mark.parametrize("bad", [-1, (1 << 20) + 1, 1 << 30])
def test_sizes_outside_the_range_are_refused(bad: int) -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.1048576 bytes"):
        layout.choose_orders(bad, 1024)


def test_plan_places_rings_in_page_then_in_following_pages() -> None:
    small = layout.plan(10, 11)
    assert (small.left_offset, small.right_offset, small.segment_size) == (1024, 2048, 4096)
    big = layout.plan(12, 14)
    assert (big.left_offset, big.right_offset, big.segment_size) == (4096, 8192, 6 * 4096)


def _header(left_order: int, right_order: int, size: int) -> memoryview:
    view = memoryview(bytearray(size))
    struct.pack_into("=HH", view, layout.LEFT_ORDER, left_order, right_order)
    return view


def test_parse_accepts_what_initialize_writes() -> None:
    for orders in [(10, 11), (11, 10), (11, 12), (12, 12), (20, 20), (13, 11)]:
        geometry = layout.plan(*orders)
        view = memoryview(bytearray(geometry.segment_size))
        layout.initialize(view, geometry)
        assert layout.parse(view) == geometry


@pytest.mark.parametrize(
    ("orders", "message"),
    [
        ((9, 11), "left ring order 9 is outside 10..20"),
        ((11, 21), "right ring order 21 is outside 10..20"),
        ((0xFFFF, 11), "outside 10..20"),
        ((10, 10), "share one slot"),
        ((11, 11), "share one slot"),
        ((10, 20), "run into the ring at offset 1024"),
    ],
)
def test_parse_rejects_orders_out_of_range(orders: tuple[int, int], message: str) -> None:
    with pytest.raises(VchanCorrupt, match=message):
        layout.parse(_header(*orders, 4096))


def test_parse_rejects_ring_pages_outside_or_overlapping() -> None:
    geometry = layout.plan(12, 12)
    view = memoryview(bytearray(geometry.segment_size))
    layout.initialize(view, geometry)
    struct.pack_into("=I", view, layout.GRANTS + 4, 3)  # right ring past the end
    with pytest.raises(VchanCorrupt, match="outside the 3-page segment"):
        layout.parse(view)
    struct.pack_into("=I", view, layout.GRANTS + 4, 1)  # right ring on the left one
    with pytest.raises(VchanCorrupt, match="overlap"):
        layout.parse(view)
    struct.pack_into("=I", view, layout.GRANTS, 0)  # left ring on the header page
    with pytest.raises(VchanCorrupt, match="outside"):
        layout.parse(view)
    struct.pack_into("=I", view, layout.GRANTS, 0xFFFFFFFF)
    with pytest.raises(VchanCorrupt, match="outside"):
        layout.parse(view)


def test_parse_rejects_scattered_ring_pages() -> None:
    geometry = layout.plan(13, 11)
    view = memoryview(bytearray(geometry.segment_size))
    layout.initialize(view, geometry)
    struct.pack_into("=I", view, layout.GRANTS + 4, 7)
    with pytest.raises(VchanCorrupt, match="consecutive"):
        layout.parse(view)


def test_parse_rejects_a_segment_that_is_not_whole_pages() -> None:
    with pytest.raises(VchanCorrupt, match="whole number of pages"):
        layout.parse(memoryview(bytearray(100)))
