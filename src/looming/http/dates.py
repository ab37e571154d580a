"""HTTP dates (RFC 9110 section 5.6.7): IMF-fixdate out, all three forms in.

Written here rather than taken from :mod:`email.utils`, which brings the
email package, :mod:`datetime` and :mod:`calendar` with it: a unikernel
serving files needs none of them, and every module imported is time at
boot (under emulation, tens of milliseconds for those).
"""

from __future__ import annotations

import time

_DAY_NAMES = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTH_NAMES = (
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
    b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
)  # fmt: skip
_MONTHS = {name.decode().lower(): number for number, name in enumerate(_MONTH_NAMES, 1)}
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Zones a sender may name instead of GMT (RFC 9110 wants GMT; older
# senders wrote these, all meaning the same).
_UTC_NAMES = frozenset({"gmt", "utc", "ut", "z"})


def format_http_date(posix_seconds: float) -> bytes:
    """``posix_seconds`` as an IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    moment = time.gmtime(int(posix_seconds))
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAY_NAMES[moment.tm_wday],
        moment.tm_mday,
        _MONTH_NAMES[moment.tm_mon - 1],
        moment.tm_year,
        moment.tm_hour,
        moment.tm_min,
        moment.tm_sec,
    )


def parse_http_date(value: bytes) -> float | None:
    """POSIX seconds of an HTTP date, or ``None`` when it does not parse.

    Takes the IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``), the obsolete
    RFC 850 form (``Sunday, 06-Nov-94 08:49:37 GMT``) and asctime's
    (``Sun Nov  6 08:49:37 1994``, always GMT). The day's name is not
    checked against the date, as senders get it wrong and nothing depends
    on it. A two-digit year is 19xx from 69, else 20xx.
    """
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    day_name, comma, rest = text.partition(",")
    if comma:
        fields = rest.split()
        if len(fields) == 3 and fields[0].count("-") == 2:  # RFC 850
            day, month, year = fields[0].split("-")
            clock, zone = fields[1], fields[2]
        elif len(fields) == 5:  # IMF-fixdate
            day, month, year, clock, zone = fields
        else:
            return None
    else:
        fields = text.split()
        if len(fields) != 5:
            return None
        day_name, month, day, clock, year = fields  # asctime
        zone = "GMT"
    if not day_name.strip().isalpha():
        return None
    offset = _zone_offset(zone)
    month_number = _MONTHS.get(month.lower())
    parts = clock.split(":")
    numbers = [day, year, *parts]
    if offset is None or month_number is None or len(parts) != 3:
        return None
    if not all(n.isdigit() and n.isascii() for n in numbers):
        return None
    day_number, year_number, hour, minute, second = (int(n) for n in numbers)
    if len(year) == 2:
        year_number += 1900 if year_number >= 69 else 2000
    elif len(year) != 4:
        return None
    if not (
        1 <= day_number <= _days_in_month(year_number, month_number)
        and hour < 24
        and minute < 60
        and second < 60
    ):
        return None
    days = _days_since_epoch(year_number, month_number, day_number)
    return float(days * 86400 + hour * 3600 + minute * 60 + second - offset)


def _zone_offset(zone: str) -> int | None:
    """Seconds east of UTC for a zone name or ``+hhmm``, or None."""
    if zone.lower() in _UTC_NAMES:
        return 0
    if len(zone) == 5 and zone[0] in "+-" and zone[1:].isdigit() and zone[1:].isascii():
        hours, minutes = int(zone[1:3]), int(zone[3:])
        if minutes >= 60:
            return None
        sign = -1 if zone[0] == "-" else 1
        return sign * (hours * 3600 + minutes * 60)
    return None


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_in_month(year: int, month: int) -> int:
    return 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month - 1]


def _days_since_epoch(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to the given proleptic Gregorian date."""
    # Count years from March, so that the leap day ends a year.
    shifted_year = year - 1 if month <= 2 else year
    era = shifted_year // 400
    year_of_era = shifted_year - era * 400
    month_from_march = (month + 9) % 12
    day_of_year = (153 * month_from_march + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468
