def choose(request, replicas):
    """Pick the replica (its index) that serves this request: the lowest cost wins.

    Seed policy: least queue. It is written as a weighted cost whose other weights start
    at zero, so every field a good router might weigh is already there to be tuned.
    """
    best = 0
    best_cost = None
    for r in replicas:
        cost = (
            1.0 * r.queue_len
            + 0.0 * r.running
            - 0.0 * r.free_slots
            + 0.0 * r.est_wait
            - 0.0 * r.cached_prefix_tokens / request.prompt_tokens
        )
        if best_cost is None or cost < best_cost:
            best = r.index
            best_cost = cost
    return best
