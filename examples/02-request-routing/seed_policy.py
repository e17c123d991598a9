def choose(request, replicas):
    """Pick the replica (its index) that serves this request.

    Seed policy: least queue -- the replica with the fewest requests waiting for prefill.
    The other fields are named here so that edits can weigh them in.
    """
    best = 0
    best_cost = None
    for r in replicas:
        waiting = r.queue_len
        running = r.running
        free = r.free_slots
        wait = r.est_wait
        cached = r.cached_prefix_tokens
        cost = waiting
        if best_cost is None or cost < best_cost:
            best = r.index
            best_cost = cost
    return best
