"""The live cache: the evaluator's sampled-priority eviction, one request at a time.

This is ``cache_sim.simulate_priority`` turned inside out: the same state per object, the
same draws from a seeded ``random.Random``, the same ghost list, in the same order, so a
policy means the same thing in the service as in the evaluator. ``tests/
test_cache_workload.py`` replays an evaluator trace through both and requires identical
counters. The differences are the ones a live service needs: keys are strings, objects
carry their value, a resident key can be overwritten, and a policy that raises or returns
a non-finite number does not stop the service (the eviction falls back to LRU, and the
error is counted).
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from cache_sim import PriorityFn


@dataclass(slots=True)
class Entry:
    """One resident object and what the policy is told about it."""

    size: int
    value: Any
    last_access: float
    access_count: int
    insert_time: float
    slot: int  # index in ``SampledPriorityCache._resident``


@dataclass(slots=True)
class Ghost:
    """A remembered eviction: how often the key came back while remembered, and when."""

    count: int
    time: float
    serial: int  # the key's newest ghost-list entry


@dataclass(frozen=True)
class PutResult:
    stored: bool  # False: the policy evicted the new object at once (not admitted)
    evictions: int  # objects removed, the new one included when it was not admitted
    policy_errors: int  # priority() calls that raised or returned a non-finite number


def lru(
    size: float,
    now: float,
    last_access: float,
    access_count: float,
    insert_time: float,
    evicted_count: float,
    last_evicted: float,
) -> float:
    """The fallback priority when the policy fails: least recently used (the seed)."""
    return last_access


class SampledPriorityCache:
    """A byte-bounded cache that evicts the lowest ``priority(...)`` of sampled objects.

    Not thread-safe: the service holds one lock around every call.
    """

    def __init__(
        self, capacity_bytes: int, priority: PriorityFn, samples: int = 8, seed: int = 0
    ) -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be positive, got {capacity_bytes}")
        self.capacity = int(capacity_bytes)
        self.priority = priority
        self.samples = samples
        self.used = 0
        self._entries: dict[str, Entry] = {}
        self._resident: list[str] = []
        self._ghosts: dict[str, Ghost] = {}
        self._ghost_list: deque[tuple[str, int]] = deque()
        self._serial = 0
        self._draw = random.Random(seed).random

    def __len__(self) -> int:
        return len(self._resident)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str, now: float) -> Entry | None:
        """The entry on a hit (its access time and count updated), else None."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.last_access = now
            entry.access_count += 1
        return entry

    def recently_evicted(self, key: str) -> bool:
        """Whether the ghost list still remembers evicting this (absent) key."""
        return key not in self._entries and key in self._ghosts

    def put(self, key: str, size: int, now: float, value: Any = None) -> PutResult:
        """Insert (or overwrite) an object, then evict until the cache fits.

        Objects larger than the whole cache are never stored, as in the simulator; the
        caller checks ``size <= capacity`` first to tell that case apart.
        """
        if size > self.capacity:
            return PutResult(stored=False, evictions=0, policy_errors=0)
        entry = self._entries.get(key)
        if entry is not None:  # an overwrite keeps the access history
            self.used += size - entry.size
            entry.size, entry.value = size, value
        else:
            entry = Entry(size, value, now, 1, now, len(self._resident))
            self._entries[key] = entry
            self._resident.append(key)
            self.used += size
        if self.used <= self.capacity:
            return PutResult(stored=True, evictions=0, policy_errors=0)
        return self._evict_for(key, entry, now)

    def _evict_for(self, key: str, new: Entry, now: float) -> PutResult:
        errors = 0
        new_p, failed = self._score(new, key, now)
        errors += failed
        evictions = 0
        while self.used > self.capacity:
            m = len(self._resident)
            victim, low = "", 0.0
            for _ in range(self.samples):
                candidate = self._resident[int(self._draw() * m)]
                p, failed = self._score(self._entries[candidate], candidate, now)
                errors += failed
                if not victim or p < low:
                    victim, low = candidate, p
            if new_p < low:
                victim = key
            self._remove(victim, now, m)
            evictions += 1
            if victim == key:
                return PutResult(stored=False, evictions=evictions, policy_errors=errors)
        return PutResult(stored=True, evictions=evictions, policy_errors=errors)

    def _score(self, entry: Entry, key: str, now: float) -> tuple[float, int]:
        """The policy's priority for one object, or LRU's (and 1 error) if it fails."""
        ghost = self._ghosts.get(key)
        args = (
            entry.size,
            now,
            entry.last_access,
            entry.access_count,
            entry.insert_time,
            ghost.count if ghost else 0,
            ghost.time if ghost else -1.0,
        )
        try:
            value = float(self.priority(*args))
            if math.isfinite(value):
                return value, 0
        except Exception:  # untrusted code: any error falls back, the service keeps serving
            pass
        return float(lru(*args)), 1

    def _remove(self, victim: str, now: float, remembered: int) -> None:
        """Evict ``victim`` and remember it; the ghost list keeps ``remembered`` entries."""
        entry = self._entries.pop(victim)
        tail = self._resident.pop()
        if tail != victim:
            self._resident[entry.slot] = tail
            self._entries[tail].slot = entry.slot
        self.used -= entry.size
        self._serial += 1
        ghost = self._ghosts.get(victim)
        count = (ghost.count if ghost else 0) + 1
        self._ghosts[victim] = Ghost(count, now, self._serial)
        self._ghost_list.append((victim, self._serial))
        while len(self._ghost_list) > remembered:
            old, serial = self._ghost_list.popleft()
            remembered_ghost = self._ghosts.get(old)
            if remembered_ghost and remembered_ghost.serial == serial and old not in self._entries:
                del self._ghosts[old]
