def choose(request, replicas):
    """Cache-aware time to first token, steering away from replicas out of KV memory.

    The estimate of cache_aware.py, plus a 5 s penalty on a replica whose decode slots
    are all spoken for: a request sent there waits for a running sequence to finish,
    which est_wait does not show.
    """
    best = 0
    best_cost = None
    for r in replicas:
        prefill = (request.prompt_tokens - r.cached_prefix_tokens) / r.prefill_tps
        cost = r.est_wait + prefill
        if r.free_slots <= r.queue_len:
            cost = cost + 5.0
        if best_cost is None or cost < best_cost:
            best = r.index
            best_cost = cost
    return best
