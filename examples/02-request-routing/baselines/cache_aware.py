def choose(request, replicas):
    """Shortest estimated time to first token.

    Queueing delay plus the time to prefill what the replica does not have cached: a
    replica holding the prompt's prefix skips that part of the prefill.
    """
    best = 0
    best_cost = None
    for r in replicas:
        prefill = (request.prompt_tokens - r.cached_prefix_tokens) / r.prefill_tps
        cost = r.est_wait + prefill
        if best_cost is None or cost < best_cost:
            best = r.index
            best_cost = cost
    return best
