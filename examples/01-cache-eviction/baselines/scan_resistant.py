def priority(size, now, last_access, access_count, insert_time, evicted_count, last_evicted):
    """A hand-written hybrid: recency, bounded frequency, and probation for new objects.

    An object seen once and never evicted before (a one-hit wonder or a scan read) ranks
    2000 s behind every object that was reused or came back soon after an eviction, so
    scans and one-off reads are evicted first. Among the rest, each access (up to 8)
    buys 100 s over plain LRU, so popular objects stay while stale ones still age out.
    """
    proven = 0.0 if access_count == 1 and evicted_count == 0 else 2000.0
    return last_access + proven + 100.0 * min(access_count, 8)
