def priority(size, now, last_access, access_count, insert_time, evicted_count, last_evicted):
    """Least frequently used; among equally used objects, the least recently used goes.

    last_access / (now + 1) is below 1, so it only breaks ties between equal counts.
    """
    return access_count + last_access / (now + 1.0)
