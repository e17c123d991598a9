def choose(request, replicas):
    """Prefix affinity with bounded load.

    Every prefix has a home replica (its id modulo the pool size), so each prefix is
    cached in one place; a request leaves home only when the home queue is more than
    two requests longer than the shortest one, and then takes the shortest.
    """
    home = request.prefix_id % len(replicas)
    best = 0
    best_cost = None
    for r in replicas:
        if best_cost is None or r.queue_len < best_cost:
            best = r.index
            best_cost = r.queue_len
    if replicas[home].queue_len <= best_cost + 2:
        return home
    return best
