def decide(
    elapsed, time_left, work_left, work_done, restart_hours, spot_available, instance, streak_hours
):
    """Uniform progress: keep the work done at or above a straight line from the start
    to the deadline. Spot whenever there is capacity; in a gap, on-demand only while
    behind the line; on-demand for good once the slack is down to two restarts."""
    slack = time_left - work_left
    if slack < 2.0 * restart_hours:
        return 2
    if spot_available > 0.5:
        return 1
    on_track = (work_done + work_left) * elapsed / (elapsed + time_left)
    if work_done < on_track:
        return 2
    return 0
