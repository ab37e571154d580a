"""Key values of an HTTP service: what configure and run accept, and the
one-line errors (exit 2) for the rest."""

from __future__ import annotations

import math

import pytest

from looming.errors import UsageError
from looming.http.service import HttpSettings


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_shutdown_timeout_that_is_not_finite_is_refused(value: float) -> None:
    """nan passed the check (nan < 0 is false) and crashed SIGTERM's
    handling; inf would have the stop wait for ever."""
    with pytest.raises(UsageError, match=r"^--shutdown-timeout: .*finite"):
        HttpSettings.from_keys(shutdown_timeout=value)


def test_finite_shutdown_timeouts_are_taken() -> None:
    assert HttpSettings.from_keys(shutdown_timeout=0.0).shutdown_timeout == 0.0
    assert HttpSettings.from_keys(shutdown_timeout=2.5).shutdown_timeout == 2.5
