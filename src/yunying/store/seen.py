"""Which event uuids may already be stored: lets most inserts skip the engine's conflict check.

DuckDB's ``INSERT ... ON CONFLICT DO NOTHING`` costs several times a plain insert, and more as the
table grows. Nearly every event the writer sees is new, so the writer asks this set first: when
no uuid of a batch may be stored, a plain ``INSERT`` is exact (the primary key still guards it);
otherwise the batch takes the conflict-checking path. The set holds 64-bit hashes computed by the
engine, so it can answer "maybe" for a uuid never stored (a hash collision, or a transaction
that rolled back) but never "no" for a stored one.
"""

from __future__ import annotations

import numpy as np

#: Hashes added since the last merge are kept in a Python set until there are this many.
MERGE_EVERY = 500_000


class SeenHashes:
    """A set of 64-bit hashes: a sorted array for the bulk, a Python set for recent additions."""

    def __init__(self, hashes: np.ndarray) -> None:
        self._sorted = np.sort(np.asarray(hashes, dtype=np.uint64))
        self._recent: set[int] = set()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def any_of(self, hashes: np.ndarray) -> bool:
        """Whether any of ``hashes`` may have been added (False means none was)."""
        if len(hashes) == 0:
            return False
        if len(self._sorted):
            pos = np.searchsorted(self._sorted, hashes)
            pos[pos == len(self._sorted)] = 0
            if bool(np.any(self._sorted[pos] == hashes)):
                return True
        recent = self._recent
        return bool(recent) and any(h in recent for h in hashes.tolist())

    def add(self, hashes: np.ndarray) -> None:
        """Remember ``hashes`` (duplicates are harmless)."""
        self._recent.update(hashes.tolist())
        if len(self._recent) >= MERGE_EVERY:
            merged = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
            self._sorted = np.sort(np.concatenate([self._sorted, merged]))
            self._recent.clear()
