def decide(
    elapsed, time_left, work_left, work_done, restart_hours, spot_available, instance, streak_hours
):
    """What runs for the next step: 0 nothing, 1 spot, 2 on-demand.

    Seed policy: greedy. Run on spot whenever there is capacity and wait out the gaps;
    once the slack left (time_left - work_left) is down to two restarts, move to
    on-demand and stay there until the job is done.
    """
    slack = time_left - work_left
    if instance == 2 or slack < 2.0 * restart_hours:
        return 2
    if spot_available > 0.5:
        return 1
    return 0
