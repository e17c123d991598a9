def choose(request, replicas):
    """Least queue: the replica with the fewest requests waiting for prefill."""
    best = 0
    best_cost = None
    for r in replicas:
        if best_cost is None or r.queue_len < best_cost:
            best = r.index
            best_cost = r.queue_len
    return best
