"""Sequence-number arithmetic.

Inside the core every sequence number is an unbounded Python integer that
only grows, so ordinary ``<`` and ``-`` work; numbers from the wire are
mapped into that space relative to a nearby known value (:func:`unwrap`) and
back with :func:`wrap`. This avoids modular comparisons everywhere else.
"""

from __future__ import annotations

MODULUS = 1 << 32
MASK = MODULUS - 1
HALF = 1 << 31


def wrap(value: int) -> int:
    """The 32-bit wire form of an unwrapped sequence number."""
    return value & MASK


def unwrap(wire: int, reference: int) -> int:
    """The unwrapped number nearest to ``reference`` whose wire form is ``wire``."""
    delta = (wire - reference) & MASK
    if delta >= HALF:
        delta -= MODULUS
    return reference + delta


def before32(a: int, b: int) -> bool:
    """Whether 32-bit value ``a`` comes before ``b`` (for timestamps)."""
    return a != b and ((b - a) & MASK) < HALF
