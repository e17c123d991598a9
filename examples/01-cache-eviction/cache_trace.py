"""Synthetic request traces for the cache evaluator, generated from the workload profile.

The real key space is scaled down to ``params.sim_keys`` keys; the request rate is scaled
by the same factor, so every simulated key is requested as often per second as a real key
would be and times (``now``, ``last_access``) stay in real seconds. The cache capacity is
scaled the same way (see ``evaluator.py``), so the cache holds the same share of the
working set as the real one.

Every trace is a pure function of (profile, params, phase, length, seed words): the
numpy generator is seeded from them and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cache_model import CacheParams, CacheWorkload, lognormal_sigma

MIN_SIZE, MAX_SIZE = 64, 64 * 1024**2


@dataclass(frozen=True)
class Trace:
    """One phase's requests, ready for a tight Python loop (plain lists, not arrays)."""

    keys: list[int]  # key id per request
    times: list[float]  # arrival time per request, seconds
    sizes: list[int]  # object size per key id, bytes
    is_scan: bytes  # 1 for key ids that only a scan reads
    measured_from: int  # requests before this index warm the cache and are not scored
    working_set_bytes: int  # total size of the regular (non-scan) keys


def _object_sizes(rng: np.random.Generator, count: int, mean: float, median: float) -> np.ndarray:
    sigma = lognormal_sigma(mean, median)
    mu = np.log(median) if sigma > 0 else np.log(mean)
    return np.clip(rng.lognormal(mu, sigma, count), MIN_SIZE, MAX_SIZE).astype(np.int64)


def generate(
    workload: CacheWorkload, params: CacheParams, phase: str, length: int, seed: list[int]
) -> Trace:
    """Generate ``length`` requests of one phase: ``steady``, ``scan`` or ``shift``."""
    rng = np.random.default_rng(seed)
    n_keys = int(min(params.sim_keys, workload.key_space))
    scale = workload.key_space / n_keys
    sim_rate = workload.request_rate / scale

    sizes = _object_sizes(
        rng, n_keys, workload.object_size_mean_bytes, workload.object_size_median_bytes
    )
    ranks = np.arange(1, n_keys + 1, dtype=np.float64)
    cdf = np.cumsum(ranks**-workload.zipf_alpha)
    cdf /= cdf[-1]

    n_scan = round(workload.scan_fraction * length) if phase == "scan" else 0
    n_regular = length - n_scan
    rank = np.searchsorted(cdf, rng.random(n_regular), side="right")
    rank = np.minimum(rank, n_keys - 1)

    if phase == "shift":
        # The popularity ranking slides: new keys enter at the top and the old hot keys
        # cool down rank by rank, ``hot_set_turnover`` hot sets per hour.
        hot_set = max(1, n_keys // 100)
        total_shift = workload.hot_set_turnover * params.shift_hours * hot_set
        offset = np.floor(np.arange(n_regular) * (total_shift / max(1, n_regular)))
        keys = ((rank - offset.astype(np.int64)) % n_keys).astype(np.int64)
    else:
        keys = rank.astype(np.int64)

    is_scan = np.zeros(n_keys + n_scan, dtype=np.uint8)
    if n_scan:
        # Scans read fresh objects back to back; each scan is inserted at a random point.
        scan_len = max(1, round(workload.scan_length_mean / scale))
        n_scans = -(-n_scan // scan_len)
        starts = np.sort(rng.integers(0, n_regular + 1, n_scans))
        where = np.repeat(starts, scan_len)[:n_scan]
        scan_keys = np.arange(n_keys, n_keys + n_scan, dtype=np.int64)
        keys = np.insert(keys, where, scan_keys)
        scan_sizes = _object_sizes(
            rng,
            n_scan,
            workload.object_size_mean_bytes * params.scan_size_factor,
            workload.object_size_median_bytes * params.scan_size_factor,
        )
        sizes = np.concatenate([sizes, scan_sizes])
        is_scan[n_keys:] = 1

    times = np.cumsum(rng.exponential(1.0 / sim_rate, length))
    return Trace(
        keys=keys.tolist(),
        times=times.tolist(),
        sizes=sizes.tolist(),
        is_scan=is_scan.tobytes(),
        measured_from=int(length * params.warmup_fraction),
        working_set_bytes=int(sizes[:n_keys].sum()),
    )
