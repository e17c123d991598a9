"""The cache simulators: sampled-priority eviction (the policy) and S3-FIFO (a reference).

Priority eviction works as Redis's approximated LRU does: when the cache is over capacity
it draws ``samples`` resident objects at random (a seeded ``random.Random``, so runs
repeat exactly) plus the object just inserted, asks the policy for each one's priority,
and evicts the lowest. Evicting the object just inserted means "do not admit it", so a
priority function can express admission control too. Ties go to the sampled residents.

A bounded ghost list remembers recently evicted keys (as many as there are resident
objects, as ARC and S3-FIFO size theirs); while a key is remembered, the policy sees how
many times it was evicted and when it was last evicted.

These loops are the evaluator's hot path: plain lists indexed by key id, locals only.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cache_trace import Trace

HOT_ACCESSES = 3  # an object hit this often before eviction counts as a "hot" eviction

PriorityFn = Callable[[int, float, float, int, float, int, float], float]


class PolicyError(RuntimeError):
    """The policy raised or returned something that is not a finite number."""


@dataclass(frozen=True)
class PhaseResult:
    """Counters over the scored part of one phase."""

    requests: int
    hits: int
    requested_bytes: int
    hit_bytes: int
    evictions: int
    hot_evictions: int  # evicted objects that had been accessed HOT_ACCESSES+ times
    scan_evictions: int  # evicted objects that only a scan reads
    rejected: int  # inserted objects evicted at once (not admitted)
    ghost_misses: int  # misses on keys evicted recently (still in the ghost list)
    policy_calls: int

    @property
    def byte_hit_ratio(self) -> float:
        return self.hit_bytes / self.requested_bytes if self.requested_bytes else 0.0

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


def simulate_priority(
    trace: Trace, capacity: int, priority: PriorityFn, samples: int, seed: int
) -> PhaseResult:
    """Replay ``trace`` through a cache that evicts by ``priority``; see the module doc."""
    keys, times, sizes, is_scan = trace.keys, trace.times, trace.sizes, trace.is_scan
    n_ids = len(sizes)
    where = [-1] * n_ids  # index in `resident`, -1 when not cached
    last = [0.0] * n_ids
    count = [0] * n_ids
    inserted = [0.0] * n_ids
    ev_count = [0] * n_ids
    ev_time = [-1.0] * n_ids
    ev_tag = [0] * n_ids  # serial of the key's newest ghost entry
    ghost: deque[tuple[int, int]] = deque()
    resident: list[int] = []
    draw = random.Random(seed).random
    used = 0
    serial = 0
    start = trace.measured_from
    hits = hit_bytes = req_bytes = 0
    evictions = hot_ev = scan_ev = rejected = ghost_misses = calls = 0
    isfinite = math.isfinite

    i = -1
    try:
        for i in range(len(keys)):
            k = keys[i]
            t = times[i]
            s = sizes[k]
            scored = i >= start
            if scored:
                req_bytes += s
            if where[k] >= 0:
                last[k] = t
                count[k] += 1
                if scored:
                    hits += 1
                    hit_bytes += s
                continue
            if s > capacity:
                continue
            if scored and ev_time[k] >= 0.0:
                ghost_misses += 1
            where[k] = len(resident)
            resident.append(k)
            last[k] = t
            count[k] = 1
            inserted[k] = t
            used += s
            if used <= capacity:
                continue
            new_p = priority(s, t, t, 1, t, ev_count[k], ev_time[k])
            calls += 1
            if not isfinite(new_p):
                raise PolicyError(f"priority() returned {new_p!r}, not a finite number")
            while used > capacity:
                m = len(resident)
                victim = -1
                low = 0.0
                for _ in range(samples):
                    c = resident[int(draw() * m)]
                    p = priority(sizes[c], t, last[c], count[c], inserted[c], ev_count[c],
                                 ev_time[c])  # fmt: skip
                    if victim < 0 or p < low:
                        victim = c
                        low = p
                calls += samples
                if not isfinite(low):
                    raise PolicyError(f"priority() returned {low!r}, not a finite number")
                if new_p < low:
                    victim = k
                # swap-remove the victim from the resident list
                j = where[victim]
                tail = resident.pop()
                if tail != victim:
                    resident[j] = tail
                    where[tail] = j
                where[victim] = -1
                used -= sizes[victim]
                if scored:
                    evictions += 1
                    if victim == k:
                        rejected += 1
                    if count[victim] >= HOT_ACCESSES:
                        hot_ev += 1
                    if is_scan[victim]:
                        scan_ev += 1
                serial += 1
                ev_count[victim] += 1
                ev_time[victim] = t
                ev_tag[victim] = serial
                ghost.append((victim, serial))
                while len(ghost) > m:
                    old, tag = ghost.popleft()
                    if ev_tag[old] == tag and where[old] < 0:
                        ev_count[old] = 0
                        ev_time[old] = -1.0
                if victim == k:
                    break
    except PolicyError:
        raise
    except Exception as exc:  # the policy's own error, reported with where it happened
        raise PolicyError(f"priority() raised {type(exc).__name__}: {exc} (request {i})") from exc

    return PhaseResult(
        requests=len(keys) - start,
        hits=hits,
        requested_bytes=req_bytes,
        hit_bytes=hit_bytes,
        evictions=evictions,
        hot_evictions=hot_ev,
        scan_evictions=scan_ev,
        rejected=rejected,
        ghost_misses=ghost_misses,
        policy_calls=calls,
    )


def simulate_s3fifo(trace: Trace, capacity: int, small_share: float = 0.1) -> PhaseResult:
    """Replay ``trace`` through S3-FIFO, sized in bytes (a reference, not a policy).

    New objects enter a small FIFO (``small_share`` of the bytes); an object leaving it
    moves to the main FIFO if it was hit while there, else its key goes to a ghost FIFO.
    A miss on a ghost key inserts straight into the main FIFO. The main FIFO reinserts an
    object that was hit (decrementing a 2-bit frequency) instead of evicting it.
    """
    # S3-FIFO is order-based: arrival times do not matter to it.
    keys, sizes, is_scan = trace.keys, trace.sizes, trace.is_scan
    n_ids = len(sizes)
    state = [0] * n_ids  # 0 absent, 1 small, 2 main
    freq = [0] * n_ids
    hits_seen = [0] * n_ids  # accesses while resident, for hot-eviction counting
    in_ghost = [0] * n_ids  # serial of the key's ghost entry, 0 when not a ghost
    small: deque[int] = deque()
    main: deque[int] = deque()
    ghost: deque[tuple[int, int]] = deque()
    small_bytes = main_bytes = 0
    small_cap = capacity * small_share
    serial = 0
    start = trace.measured_from
    hits = hit_bytes = req_bytes = evictions = hot_ev = scan_ev = ghost_misses = 0

    for i in range(len(keys)):
        k = keys[i]
        s = sizes[k]
        scored = i >= start
        if scored:
            req_bytes += s
        if state[k]:
            if freq[k] < 3:
                freq[k] += 1
            hits_seen[k] += 1
            if scored:
                hits += 1
                hit_bytes += s
            continue
        if s > capacity:
            continue
        while small_bytes + main_bytes + s > capacity:
            if small and (small_bytes > small_cap or not main):
                v = small.popleft()
                small_bytes -= sizes[v]
                if freq[v] > 0:
                    state[v] = 2
                    freq[v] = 0
                    main.append(v)
                    main_bytes += sizes[v]
                    continue
                serial += 1
                in_ghost[v] = serial
                ghost.append((v, serial))
                while len(ghost) > len(main) + len(small):
                    old, tag = ghost.popleft()
                    if in_ghost[old] == tag:
                        in_ghost[old] = 0
            else:
                v = main.popleft()
                if freq[v] > 0:
                    freq[v] -= 1
                    main.append(v)
                    continue
                main_bytes -= sizes[v]
            state[v] = 0
            if scored:
                evictions += 1
                hot_ev += hits_seen[v] + 1 >= HOT_ACCESSES
                scan_ev += is_scan[v]
        freq[k] = 0
        hits_seen[k] = 0
        if in_ghost[k]:
            if scored:
                ghost_misses += 1
            in_ghost[k] = 0
            state[k] = 2
            main.append(k)
            main_bytes += s
        else:
            state[k] = 1
            small.append(k)
            small_bytes += s

    return PhaseResult(
        requests=len(keys) - start,
        hits=hits,
        requested_bytes=req_bytes,
        hit_bytes=hit_bytes,
        evictions=evictions,
        hot_evictions=hot_ev,
        scan_evictions=scan_ev,
        rejected=0,
        ghost_misses=ghost_misses,
        policy_calls=0,
    )
