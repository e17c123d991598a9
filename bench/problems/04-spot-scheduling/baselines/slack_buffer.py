def decide(
    elapsed, time_left, work_left, work_done, restart_hours, spot_available, instance, streak_hours
):
    """Greedy with a slack buffer: wait out a spot gap only while more than a buffer of
    slack is left (a quarter of the work left, at least four restarts), else bridge the
    gap on on-demand and go back to spot once it has held for half an hour. On-demand
    for good once the slack is down to two restarts."""
    slack = time_left - work_left
    if slack < 2.0 * restart_hours:
        return 2
    buffer = max(4.0 * restart_hours, 0.25 * work_left)
    if spot_available > 0.5:
        if instance == 2 and streak_hours < 0.5:
            return 2
        return 1
    if instance == 2 or slack < buffer:
        return 2
    return 0
