def priority(size, now, last_access, access_count, insert_time, evicted_count, last_evicted):
    """LRU where every access buys an object 300 more seconds in the cache.

    One term added to the LRU seed: the kind of edit a single mutation makes.
    """
    return last_access + 300.0 * access_count
