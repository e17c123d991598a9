"""The routing simulator: requests arrive, the policy picks a replica, replicas serve.

Each replica is modelled as a vLLM-style server:

- a FIFO prefill queue, served one request at a time at ``prefill_tokens_per_s``, slowed
  by up to ``decode_interference`` when its decode batch is full;
- a prefix cache (LRU over shared prefixes, sized in tokens): a request whose prefix is
  cached prefills only its own suffix;
- a decode batch bounded by KV memory (``max_running`` sequences); a request whose prefill
  would overflow it waits for a sequence to finish. Decoding runs at a per-sequence speed.

Because every replica is FIFO, a request's first-token time is fixed the moment it is
routed, so the simulation needs no event queue: it walks the arrivals in order. That
keeps it fast enough to call the policy thousands of times per evaluation.

The policy sees read-only snapshots (``RequestView``, ``ReplicaView``) refreshed before
each call; writing to them changes nothing in the simulation.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from routing_model import Pool, RoutingParams, RoutingWorkload

SCHEDULING_OVERHEAD_S = 0.01  # per prefill: batching, tokenisation, first step


class PolicyError(RuntimeError):
    """The policy raised, or returned something that is not a replica index."""


class RequestView:
    """The request being routed."""

    __slots__ = ("now", "prefix_id", "prefix_tokens", "prompt_tokens")

    def __init__(self) -> None:
        self.now = 0.0  # arrival time, seconds
        self.prompt_tokens = 0  # whole prompt, prefix included
        self.prefix_id = 0  # which shared prefix (system prompt, document...) it starts with
        self.prefix_tokens = 0  # how long that prefix is


class ReplicaView:
    """One replica as the router sees it at this instant."""

    __slots__ = (
        "cache_fill",
        "cached_prefix_tokens",
        "decode_tps",
        "est_wait",
        "free_slots",
        "has_prefix",
        "index",
        "pending_tokens",
        "prefill_tps",
        "queue_len",
        "running",
    )

    def __init__(self, index: int, prefill_tps: float, decode_tps: float) -> None:
        self.index = index  # what choose() returns to pick this replica
        self.queue_len = 0  # requests waiting for (or in) prefill
        self.running = 0  # requests decoding
        self.free_slots = 0  # decode slots left before KV memory is full
        self.pending_tokens = 0  # prompt tokens still to prefill (cache hits excluded)
        self.est_wait = 0.0  # seconds until its prefill queue drains (decode-slot waits excluded)
        self.has_prefix = False  # this request's prefix is in this replica's cache
        self.cached_prefix_tokens = 0  # prompt tokens this replica would not recompute
        self.cache_fill = 0.0  # share of the prefix cache in use
        self.prefill_tps = prefill_tps  # prompt tokens per second
        self.decode_tps = decode_tps  # output tokens per second per sequence


ChooseFn = Callable[[RequestView, Sequence[ReplicaView]], int]


@dataclass(frozen=True)
class Arrivals:
    """One load level's requests (plain lists for the hot loop)."""

    times: list[float]
    prefix_ids: list[int]
    prefix_tokens: list[int]
    suffix_tokens: list[int]
    output_tokens: list[int]
    measured_from: int


def generate(
    workload: RoutingWorkload, params: RoutingParams, rate: float, count: int, seed: list[int]
) -> Arrivals:
    """Draw ``count`` requests at ``rate`` per second from the traffic profile."""
    rng = np.random.default_rng(seed)
    groups = int(workload.prefix_groups)
    prefix_mean = workload.prompt_tokens_mean * workload.shared_prefix_fraction
    suffix_mean = max(1.0, workload.prompt_tokens_mean - prefix_mean)
    # Each prefix has a fixed length; popularity follows a Zipf law over the groups.
    group_len = _lognormal(rng, prefix_mean, 0.6, groups, low=16)
    weights = np.arange(1, groups + 1, dtype=np.float64) ** -workload.prefix_zipf_alpha
    group = rng.choice(groups, size=count, p=weights / weights.sum())
    group_id = rng.permutation(groups) * 7919 + 101  # opaque ids, unrelated to popularity
    shape = 1.0 / workload.arrival_cv**2  # Gamma inter-arrivals with this coefficient of variation
    gaps = rng.gamma(shape, 1.0 / (shape * rate), count)
    return Arrivals(
        times=np.cumsum(gaps).tolist(),
        prefix_ids=group_id[group].tolist(),
        prefix_tokens=group_len[group].tolist(),
        suffix_tokens=_lognormal(rng, suffix_mean, 0.8, count, low=1).tolist(),
        output_tokens=_lognormal(rng, workload.output_tokens_mean, 0.7, count, low=1).tolist(),
        measured_from=int(count * params.warmup_fraction),
    )


def _lognormal(
    rng: np.random.Generator, mean: float, sigma: float, count: int, low: int
) -> np.ndarray:
    values = rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, count)
    return np.maximum(np.rint(values), low).astype(np.int64)


@dataclass(frozen=True)
class LevelResult:
    """What happened to the scored requests of one load level."""

    ttft: list[float]  # time to first token per scored request, seconds
    prompt_tokens: int
    cached_tokens: int  # prompt tokens served from a prefix cache
    routed: list[int]  # scored requests per replica
    slot_waits: int  # scored requests that waited for a decode slot (KV memory full)
    policy_calls: int


def simulate(
    arrivals: Arrivals, pool: Pool, params: RoutingParams, choose: ChooseFn
) -> LevelResult:
    """Route every arrival with ``choose`` and return the first-token times."""
    n = pool.replicas
    prefill_tps = pool.gpu.prefill_tokens_per_s
    decode_tps = pool.gpu.decode_tokens_per_s
    cache_cap = pool.prefix_cache_tokens
    max_running = pool.max_running
    interference = params.decode_interference / max_running

    free_at = [0.0] * n  # when each replica's prefill queue drains
    decoding: list[list[float]] = [[] for _ in range(n)]  # sorted decode end times
    queued: list[deque[tuple[float, int]]] = [deque() for _ in range(n)]  # (first token, tokens)
    pending = [0] * n
    caches: list[OrderedDict[int, int]] = [OrderedDict() for _ in range(n)]
    cache_used = [0] * n
    views = tuple(ReplicaView(i, prefill_tps, decode_tps) for i in range(n))
    request = RequestView()
    routed = [0] * n
    ttft: list[float] = []
    prompt_total = cached_total = slot_waits = 0
    start_scoring = arrivals.measured_from

    times, ids = arrivals.times, arrivals.prefix_ids
    prefixes, suffixes, outputs = (
        arrivals.prefix_tokens,
        arrivals.suffix_tokens,
        arrivals.output_tokens,
    )
    for i in range(len(times)):
        now = times[i]
        pid = ids[i]
        plen = prefixes[i]
        prompt = plen + suffixes[i]
        for r in range(n):
            q = queued[r]
            while q and q[0][0] <= now:
                pending[r] -= q.popleft()[1]
            ends = decoding[r]
            if ends and ends[0] <= now:
                del ends[: bisect_right(ends, now)]
            v = views[r]
            v.queue_len = len(q)
            v.running = len(ends) - len(q)
            v.free_slots = max(0, max_running - len(ends))
            v.pending_tokens = pending[r]
            v.est_wait = free_at[r] - now if free_at[r] > now else 0.0
            hit = pid in caches[r]
            v.has_prefix = hit
            v.cached_prefix_tokens = plen if hit else 0
            v.cache_fill = cache_used[r] / cache_cap
        request.now = now
        request.prompt_tokens = prompt
        request.prefix_id = pid
        request.prefix_tokens = plen
        try:
            picked: object = choose(request, views)
        except Exception as exc:
            raise PolicyError(f"choose() raised {type(exc).__name__}: {exc} (request {i})") from exc
        if isinstance(picked, int) and not isinstance(picked, bool):
            choice = picked
        elif isinstance(picked, float) and picked.is_integer():
            choice = int(picked)
        else:
            raise PolicyError(f"choose() returned {picked!r}; expected a replica index (int)")
        if not 0 <= choice < n:
            raise PolicyError(f"choose() returned {choice}; expected 0..{n - 1}")

        # Serve on the chosen replica: prefix cache, decode slots, FIFO prefill.
        cache = caches[choice]
        if pid in cache:
            cache.move_to_end(pid)
            cached = plen
        else:
            cached = 0
            if plen <= cache_cap:
                cache[pid] = plen
                cache_used[choice] += plen
                while cache_used[choice] > cache_cap:
                    cache_used[choice] -= cache.popitem(last=False)[1]
        # Every earlier request on this replica is decoding by `start` (FIFO), so the batch
        # at `start` is the decode ends after it; wait for a slot if KV memory is full.
        ends = decoding[choice]
        start = free_at[choice] if free_at[choice] > now else now
        active = len(ends) - bisect_right(ends, start)
        waited = active >= max_running
        if waited:
            start = ends[len(ends) - max_running]
            active = max_running - 1
        work = prompt - cached
        first = start + SCHEDULING_OVERHEAD_S + work / prefill_tps * (1.0 + interference * active)
        free_at[choice] = first
        insort(ends, first + outputs[i] / decode_tps)
        queued[choice].append((first, work))
        pending[choice] += work
        if i >= start_scoring:
            ttft.append(first - now)
            prompt_total += prompt
            cached_total += cached
            routed[choice] += 1
            slot_waits += waited

    return LevelResult(
        ttft=ttft,
        prompt_tokens=prompt_total,
        cached_tokens=cached_total,
        routed=routed,
        slot_waits=slot_waits,
        policy_calls=len(times),
    )
