"""The soak script (benchmarks/soak.py) at the size of a test: 100,000 messages, in which
the receiver's peak memory must grow by under 1 MB, as the README promises for any flood."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).parent.parent / "benchmarks" / "soak.py"


def test_a_flood_into_a_slow_coroutine_handler_is_handled_exactly_once_in_bounded_memory() -> None:
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--messages", "100000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(proc.stdout)
    assert result["handled"] == 100000
    assert result["duplicates"] == 0 and result["missing"] == 0
    assert result["rss_growth_mb"] < 1.0, result
    assert proc.returncode == 0, proc.stderr
