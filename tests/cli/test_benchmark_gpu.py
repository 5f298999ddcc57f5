"""The accelerator benchmark suite runs end to end (``tools/benchmark.py gpu --quick``).

Times are never asserted: the test checks that every method's row is printed
with a positive, finite frame rate, so the suite a GPU session runs in one call
does not first fail there.
"""

from __future__ import annotations

import math
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
METHODS = ("STCN", "TrickVOS lightweight", "PCVOS L = 5", "PCVOS L = 10", "FRTM", "JOINT",
           "cyclic + correction")


@pytest.mark.slow
def test_gpu_suite_quick_prints_every_method():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmark.py"), "gpu", "--quick", "--no-train"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for name in METHODS:
        m = re.search(rf"^{re.escape(name)}\s+([0-9.]+)\s+([0-9.]+)s", out.stdout, re.MULTILINE)
        assert m, f"no row for {name!r} in:\n{out.stdout}"
        assert math.isfinite(float(m.group(1))) and float(m.group(1)) > 0, m.group(0)
    assert "peak accelerator memory:" in out.stdout
