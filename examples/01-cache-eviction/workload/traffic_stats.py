"""What the cache measures about its traffic, for the workload profile.

The evaluator builds its trace from a handful of numbers (``cache_model.CacheWorkload``);
this module estimates the ones a counter cannot give directly, from the reads the cache
serves:

- distinct keys in the last ``keyspace_window`` (a day by default): a HyperLogLog per
  hour, merged, so memory stays a few KiB per hour whatever the key space;
- the Zipf exponent of key popularity: the slope of log(count) over log(rank) of the keys
  read in the last ``window`` (ranks with fewer than ``MIN_COUNT`` reads are noise, left
  out);
- hot-set turnover: the share of the hottest 1% of keys that were not even in the
  hottest 4% half a minute to five minutes earlier, per hour (the margin keeps keys that
  only trade places around the 1% boundary from counting as new). "1% of the keys" is 1%
  of the distinct-key estimate, as the evaluator's hot set is 1% of ``key_space``, so the
  number of new hot keys per hour the evaluator replays is the one measured. Nothing is
  reported until the hot set's coldest key has ``HOT_MIN_COUNT`` reads in the window;
  turnovers near ``3600 / window`` hot sets per hour and above read low (a hot key
  passes through faster than the window sees it);
- scan lengths: reads carrying a scan id are counted per scan; a scan ends when none of
  its reads came for ``scan_idle`` seconds.

Scan reads are left out of the first three: the evaluator's key space, skew and hot set
describe the regular keys, and scans are added on top of them.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import Counter, deque
from dataclasses import dataclass, field

MIN_COUNT = 10  # reads a key needs in the window to take part in the Zipf fit
MIN_RANKS = 10  # keys with MIN_COUNT reads needed before a Zipf estimate is given
HOT_MIN_COUNT = 10  # reads the coldest key of the hot set needs before turnover is measured
MARGIN = 4  # a hot key is new if it was not even in the hottest 4% before
HLL_BITS = 12  # 4096 registers: about 1.6% standard error


class HyperLogLog:
    """A distinct-count sketch (Flajolet et al.), small enough to keep one per hour."""

    def __init__(self) -> None:
        self.registers = bytearray(1 << HLL_BITS)

    def add(self, key: str) -> None:
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        index = h >> (64 - HLL_BITS)
        rest = h & ((1 << (64 - HLL_BITS)) - 1)
        rank = (64 - HLL_BITS) - rest.bit_length() + 1  # position of the first 1 bit
        if rank > self.registers[index]:
            self.registers[index] = rank

    @staticmethod
    def count(sketches: list[HyperLogLog]) -> float:
        """The estimated number of distinct keys added to any of ``sketches``."""
        if not sketches:
            return 0.0
        merged = sketches[0].registers
        if len(sketches) > 1:
            merged = bytearray(map(max, *(s.registers for s in sketches)))
        m = len(merged)
        estimate = (0.7213 / (1 + 1.079 / m)) * m * m / sum(2.0**-r for r in merged)
        zeros = merged.count(0)
        if estimate <= 2.5 * m and zeros:
            return m * math.log(m / zeros)  # linear counting is better for small counts
        return estimate


def zipf_exponent(counts: Counter[str]) -> float | None:
    """Least-squares slope of log(count) over log(rank), negated; None without data."""
    ranked = sorted((c for c in counts.values() if c >= MIN_COUNT), reverse=True)
    if len(ranked) < MIN_RANKS:
        return None
    xs = [math.log(rank) for rank in range(1, len(ranked) + 1)]
    ys = [math.log(c) for c in ranked]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return max(0.0, -sxy / sxx)


@dataclass
class _Snapshot:
    time: float
    ranked: list[str]  # the hottest MARGIN x 1% of keys, hottest first
    hot_size: int  # 1% of the key space at the time


@dataclass
class TrafficStats:
    """Running estimates over the reads the cache serves. Not thread-safe."""

    window: float = 300.0  # seconds of reads behind the Zipf and hot-set estimates
    keyspace_window: float = 86400.0
    scan_idle: float = 2.0
    turnover_lag: tuple[float, float] = (30.0, 300.0)  # compare with a snapshot this old
    snapshot_every: float = 10.0
    bucket: float = 30.0  # reads leave the window in steps of this many seconds

    zipf_alpha: float | None = field(default=None, init=False)
    hot_set_turnover: float | None = field(default=None, init=False)
    _counts: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _buckets: deque[tuple[float, Counter[str]]] = field(
        default_factory=deque, init=False, repr=False
    )
    _sketches: deque[tuple[float, HyperLogLog]] = field(
        default_factory=deque, init=False, repr=False
    )
    _snapshots: deque[_Snapshot] = field(default_factory=deque, init=False, repr=False)
    _scans: dict[str, tuple[int, float]] = field(default_factory=dict, init=False, repr=False)

    def observe_read(self, key: str, scan: str | None, now: float) -> None:
        """Count one read; ``scan`` is the scan id of a sequential read, else None."""
        if scan is not None:
            count, _ = self._scans.get(scan, (0, now))
            self._scans[scan] = (count + 1, now)
            return
        if not self._buckets or now - self._buckets[-1][0] >= self.bucket:
            self._buckets.append((now, Counter()))
        self._buckets[-1][1][key] += 1
        self._counts[key] += 1
        hour = now - now % 3600.0
        if not self._sketches or self._sketches[-1][0] != hour:
            self._sketches.append((hour, HyperLogLog()))
        self._sketches[-1][1].add(key)

    def finished_scans(self, now: float) -> list[int]:
        """Lengths of the scans that ended (went idle) since the last call."""
        done = [s for s, (_, last) in self._scans.items() if now - last >= self.scan_idle]
        return [self._scans.pop(s)[0] for s in done]

    def distinct_keys(self, now: float) -> float | None:
        """Distinct regular keys read in the last ``keyspace_window`` (whole hours)."""
        while self._sketches and now - self._sketches[0][0] >= self.keyspace_window + 3600.0:
            self._sketches.popleft()
        if not self._sketches:
            return None
        return HyperLogLog.count([s for _, s in self._sketches])

    def refresh(self, now: float) -> None:
        """Drop reads older than the window; re-estimate skew and turnover."""
        while self._buckets and now - self._buckets[0][0] >= self.window:
            _, old = self._buckets.popleft()
            self._counts.subtract(old)
            for key in old:
                if self._counts[key] <= 0:
                    del self._counts[key]
        self.zipf_alpha = zipf_exponent(self._counts)
        self._update_turnover(now)

    def _update_turnover(self, now: float) -> None:
        self.hot_set_turnover = None  # unless it can be measured now
        distinct = self.distinct_keys(now) or len(self._counts)
        hot_size = max(1, round(distinct / 100))
        ranked = heapq.nlargest(MARGIN * hot_size, self._counts.items(), key=lambda kv: kv[1])
        if len(ranked) < MARGIN * hot_size or ranked[hot_size - 1][1] < HOT_MIN_COUNT:
            return  # the hot set is not yet told apart from noise
        current = _Snapshot(now, [k for k, _ in ranked], hot_size)
        shortest, longest = self.turnover_lag
        while self._snapshots and now - self._snapshots[0].time > longest:
            self._snapshots.popleft()
        # The oldest snapshot old enough, of a key space about as large as now's.
        reference = next(
            (
                s
                for s in self._snapshots
                if s.hot_size >= 0.75 * hot_size and now - s.time >= shortest
            ),
            None,
        )
        if not self._snapshots or now - self._snapshots[-1].time >= self.snapshot_every:
            self._snapshots.append(current)
        if reference is None:
            return
        size = min(hot_size, reference.hot_size)
        new = set(current.ranked[:size]) - set(reference.ranked[: MARGIN * size])
        self.hot_set_turnover = len(new) / size * 3600.0 / (now - reference.time)
