import math


def priority(size, now, last_access, access_count, insert_time, evicted_count, last_evicted):
    """Recency plus 400 s per doubling of the accesses (a ghost hit counts two); objects
    seen once and never evicted 2000 s behind."""
    n = access_count + 2 * evicted_count
    if n <= 1:
        return last_access - 2000.0
    return last_access + 400.0 * math.log(n)
