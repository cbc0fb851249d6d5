"""Keeping freed memory for the next query.

An analysis builds arrays of tens of megabytes (per-person lists, chains). glibc serves blocks
that big with ``mmap`` and hands them back to the system on ``free``, so the next query takes a
page fault for every 4 KiB it touches again; on a virtual machine that costs as much as the
arithmetic (the ordered funnel at 11M events: 0.65-0.78 s -> 0.54-0.64 s, docs/benchmarks.md).
:func:`keep_freed_memory` raises glibc's thresholds so such blocks come from the heap and stay
there between queries. Processes that serve analyses (``yunying serve``, the CLI, the bench)
call it once; ``YUNYING_KEEP_FREED_MEMORY=0`` leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import os

#: glibc's ``mallopt`` parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: blocks up to this size come from the heap, not from their own mapping
MMAP_THRESHOLD = 256 << 20
#: free memory at the heap's top kept up to this size instead of returned to the system
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Have glibc keep big freed blocks for reuse; ``False`` where the C library has no
    ``mallopt`` (macOS, musl's does nothing) or ``YUNYING_KEEP_FREED_MEMORY=0``."""
    if os.environ.get("YUNYING_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
