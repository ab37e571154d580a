"""dedup_crash.py with the bug fixed: the server rebuilds its
duplicate-request table from the durable ledger at boot, so a retry after
a crash is answered from the table, never applied twice.

    looming sim run examples/scenarios/dedup_crash_fixed.py --seeds 1..200
"""

from __future__ import annotations

import runpy
from pathlib import Path

_planted = runpy.run_path(str(Path(__file__).resolve().with_name("dedup_crash.py")))

SCENARIO = _planted["build"]("dedup-crash-fixed", recover_table=True)
