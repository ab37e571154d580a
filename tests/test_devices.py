"""The device interfaces: small value types behave as documented."""

import pytest

from looming.devices import BlockInfo, MacAddress


def test_mac_address_round_trips_text() -> None:
    mac = MacAddress("02:00:5e:10:00:ff")
    assert bytes(mac) == b"\x02\x00\x5e\x10\x00\xff"
    assert str(mac) == "02:00:5e:10:00:ff"
    assert not mac.is_broadcast
    assert MacAddress(b"\xff" * 6).is_broadcast
    assert MacAddress("01:00:5e:00:00:01").is_multicast


@pytest.mark.parametrize("bad", ["02:00", "zz:00:00:00:00:00", b"\x00" * 5])
def test_mac_address_rejects_bad_input(bad: str | bytes) -> None:
    with pytest.raises(ValueError):
        MacAddress(bad)


def test_block_info_size() -> None:
    assert BlockInfo(sector_size=512, sectors=8, read_write=True).size_bytes == 4096
