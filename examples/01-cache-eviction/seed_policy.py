def priority(size, now, last_access, access_count, insert_time, evicted_count, last_evicted):
    """Eviction priority of one cached object: the lowest among the candidates is evicted.

    Seed policy: least recently used (LRU). The object used longest ago goes first.
    """
    return last_access
