"""Implementations name the devices they need (``Dep``), not their positions."""

from __future__ import annotations

import pytest

from looming.config.dsl import Device, Location
from looming.config.plan import Dep, Impl, PlannedDevice
from looming.errors import ConfigError

WHERE = Location("config.py", 3)


def _planned(impl: Impl, dep_names: dict[str, str]) -> PlannedDevice:
    dev = Device("stack", (), [], WHERE, "stack")
    return PlannedDevice(dev, impl, "stack", list(dep_names.values()), dep_names)


def test_each_dep_marker_becomes_the_variable_of_the_device_it_names() -> None:
    impl = Impl(
        "m:Stack.connect",
        args=[Dep("network"), "keys.ipv4"],
        kwargs=[("time", Dep("time")), ("sizes", "{'rx': 1}")],
        awaited=True,
    )
    pd = _planned(impl, {"time": "time_1", "network": "net"})
    # Strings are emitted as written: braces are not placeholders any more.
    assert pd.call() == "await Stack.connect(net, keys.ipv4, time=time_1, sizes={'rx': 1})"


def test_a_dep_the_implementation_does_not_declare_is_a_config_error() -> None:
    impl = Impl("m:Stack", args=[Dep("clock")])
    with pytest.raises(ConfigError, match=r"uses the device 'clock' but its deps name only: time"):
        _planned(impl, {"time": "time"}).call()


def test_a_numbered_placeholder_is_refused_not_emitted_as_a_set() -> None:
    impl = Impl("m:Stack", kwargs=[("time", "{0}")])
    with pytest.raises(ConfigError, match=r"passes '\{0\}': devices are no longer numbered"):
        _planned(impl, {"time": "time"}).check()
