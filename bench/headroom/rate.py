def priority(size, now, last_access, access_count, insert_time, evicted_count, last_evicted):
    """Estimated request rate, with a ghost hit worth two accesses; objects seen once and
    never evicted are not admitted past the residents (evicted first, oldest first)."""
    age = max(now - insert_time, 1.0)
    rate = (access_count + 2.0 * evicted_count) / age
    if access_count == 1 and evicted_count == 0:
        return -1e9 + insert_time
    return rate
