def decide(
    elapsed, time_left, work_left, work_done, restart_hours, spot_available, instance, streak_hours
):
    """On-demand only: never late, never cheaper."""
    return 2
