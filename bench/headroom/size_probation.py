def priority(size, now, last_access, access_count, insert_time, evicted_count, last_evicted):
    """The hybrid's probation, deeper for larger new objects (scans read large objects
    once); ghost hits buy 600 s each."""
    if access_count == 1 and evicted_count == 0:
        return last_access - 2000.0 - size / 5000.0
    return last_access + 100.0 * min(access_count, 8) + 600.0 * min(evicted_count, 3)
