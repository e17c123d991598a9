def priority(size, now, last_access, access_count, insert_time, evicted_count, last_evicted):
    """LRU-K-like: recency minus half the mean gap between accesses (a steady object is
    expected back sooner), a bonus per access and per ghost hit; probation for objects
    seen once."""
    gap = (last_access - insert_time) / max(access_count - 1, 1)
    if access_count == 1 and evicted_count == 0:
        return last_access - 2500.0
    bonus = 100.0 * min(access_count, 8) + 800.0 * min(evicted_count, 2)
    return last_access - 0.5 * min(gap, 4000.0) + bonus
