"""Judge a series again one look longer at the cost of one look, not of the whole series.

The canary sensor keeps each release's series in its cursor and re-judges it every tick, and the
sequential tests are built so that what they computed up to look k depends on looks 0..k only.
A `PrefixMemo` keeps the state a test reached at the end of a series, keyed by a digest of that
series (and of the settings that shape the state); the next tick finds the state of its series
minus the newest look and resumes from there. Results are the same as a full run by construction:
a state is only reused for a byte-identical prefix. A cold process (a restarted code server) or an
evicted entry simply computes from the start. Memory is bounded by bytes, least recently used
first; a lock keeps it safe when Dagster evaluates sensors in threads.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np


def prefix_digests(salt: bytes, looks: np.ndarray) -> list[bytes]:
    """Digest of looks 0..k (rows of `looks`, one per look) for each k: one pass over the series."""
    rows = np.ascontiguousarray(looks, dtype=float)
    rows = rows.reshape(len(rows), -1) if rows.size else rows.reshape(len(rows), 0)
    running = hashlib.blake2b(salt + b"|%d|" % rows.shape[1], digest_size=16)
    digests = []
    for row in rows:
        running.update(row.data)
        digests.append(running.copy().digest())
    return digests


class PrefixMemo:
    """States of a sequential computation at the end of series seen lately, by prefix digest."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._states: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def resume(self, digests: Sequence[bytes]) -> tuple[int, Any]:
        """(looks covered, state) of the longest known prefix; (0, None) if none is known."""
        with self._lock:
            for looks in range(len(digests), 0, -1):
                found = self._states.get(digests[looks - 1])
                if found is not None:
                    self._states.move_to_end(digests[looks - 1])
                    return looks, found[0]
        return 0, None

    def keep(self, digest: bytes, state: Any, nbytes: int) -> None:
        """Keep `state` (never mutated afterwards) as the state after the series `digest` names."""
        if nbytes > self.max_bytes:
            return
        with self._lock:
            if digest in self._states:
                self._bytes -= self._states.pop(digest)[1]
            self._states[digest] = (state, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes:
                self._bytes -= self._states.popitem(last=False)[1][1]

    def clear(self) -> None:
        with self._lock:
            self._states.clear()
            self._bytes = 0
