def priority(size, now, last_access, access_count, insert_time, evicted_count, last_evicted):
    """Recency plus a bounded bonus growing with the request rate and the access count;
    probation for objects seen once."""
    age = max(now - insert_time, 1.0)
    rate = (access_count + 2.0 * evicted_count) / age
    if access_count == 1 and evicted_count == 0:
        return -1e9 + insert_time
    bonus = min(600.0 * rate * age / (1 + access_count), 3000.0)
    return last_access + bonus + 150.0 * min(access_count, 10)
