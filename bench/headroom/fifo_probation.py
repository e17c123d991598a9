def priority(size, now, last_access, access_count, insert_time, evicted_count, last_evicted):
    """S3-FIFO's shape: objects seen once leave in insertion order, 3000 s behind the rest;
    the rest by recency, with bonuses for accesses and for returns from the ghost list."""
    if access_count == 1 and evicted_count == 0:
        return insert_time - 3000.0
    return last_access + 200.0 * min(access_count, 8) + 1000.0 * min(evicted_count, 2)
