"""keep_freed_memory: an analysis's big arrays, freed, are reused by the next query without
page faults. Each check runs in a fresh interpreter: the setting is process-wide."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# the sizes of a funnel's arrays at 1M persons: lists, per-person arrays, chains; the faults of
# the fourth round (the first one faults whatever the allocator does)
PROBE = """
import resource
import numpy as np
from yunying.analytics.memory import keep_freed_memory
kept = keep_freed_memory()
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(n) for n in (3_100_000, 1_000_000, 400_000, 3_100_000, 1_000_000)]
    arrays.append(np.ones(6_000_000))
    del arrays
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(setting: str) -> tuple[bool, int]:
    env = {**os.environ, "YUNYING_KEEP_FREED_MEMORY": setting}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_arrays_are_reused_without_page_faults() -> None:
    kept, faults = probe("1")
    assert kept and faults < 100
    kept, faults = probe("0")  # glibc hands some back, and the next round faults them in
    assert not kept and faults > 1000
