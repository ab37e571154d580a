"""One table of device kinds: each built-in target's devices come from it."""

from __future__ import annotations

import pytest

from looming.config import targets as targets_module
from looming.config.dsl import Device, Location
from looming.config.kinds import KINDS, targets_with
from looming.config.plan import Impl, implement
from looming.config.targets import Target, all_targets
from looming.errors import ConfigError

WHERE = Location("config.py", 7)


def _device(kind: str) -> Device:
    return Device(kind, (), [], WHERE, kind)


def test_every_column_of_the_table_is_a_built_in_target() -> None:
    named = {name for row in KINDS.values() for name in row}
    assert named == {"unix", "process", "sim", "vm"}
    assert named <= set(all_targets())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_target_supports_a_kind_exactly_when_its_column_has_it(kind: str) -> None:
    for name, target in all_targets().items():
        assert target.supports(kind) == (name in KINDS[kind]), (name, kind)


def test_a_refusal_lists_the_targets_of_the_table_that_have_the_kind() -> None:
    sim = all_targets()["sim"]
    with pytest.raises(ConfigError) as info:
        sim.implement(_device("vchan"), {})
    assert targets_with("vchan") == ["process", "vm"]
    assert str(info.value).endswith(
        "no implementation for device 'vchan'; targets that have one: process, vm"
    )
    with pytest.raises(ConfigError, match=r"targets that have one: process, vm$"):
        all_targets()["unix"].implement(_device("vchan"), {})


def test_the_process_target_provides_host_devices_as_unix_does() -> None:
    unix, process = all_targets()["unix"], all_targets()["process"]
    for kind in ("console", "time", "clock", "random"):
        assert process.implement(_device(kind), {}) == unix.implement(_device(kind), {})


class _Gadget(Target):
    name = "gadget"
    summary = "a target installed from an entry point"

    def supports(self, kind: str) -> bool:
        return kind in ("console", "vchan")

    def implement(self, device: Device, options: dict[str, str]) -> Impl:
        if not self.supports(device.kind):
            raise self.unsupported(device)
        return Impl(f"gadget.devices:{device.kind.title()}")


def test_a_third_party_target_implements_kinds_its_own_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gadget = _Gadget()
    monkeypatch.setattr(targets_module, "_cache", {**all_targets(), "gadget": gadget})
    assert implement(gadget, _device("vchan"), {}).factory == "gadget.devices:Vchan"
    # Its kinds appear in the built-in targets' refusals, beside the table's.
    with pytest.raises(ConfigError, match=r"targets that have one: process, vm, gadget$"):
        all_targets()["unix"].implement(_device("vchan"), {})
    with pytest.raises(ConfigError, match="gadget target has no implementation for device 'kv_rw'"):
        gadget.implement(_device("kv_rw"), {})
