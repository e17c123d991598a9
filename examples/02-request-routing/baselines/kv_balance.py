def choose(request, replicas):
    """KV-memory balance: the replica with the most free decode slots after its queue.

    Every queued request will take a slot, so free_slots - queue_len is the room left
    for this one.
    """
    best = 0
    best_room = None
    for r in replicas:
        room = r.free_slots - r.queue_len
        if best_room is None or room > best_room:
            best = r.index
            best_room = room
    return best
