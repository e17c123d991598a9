def replicas(
    now, current, ready, cpu_utilization, queue_length, request_rate, capacity_per_replica
):
    """Desired replica count of the deployment, decided every sync period.

    Seed policy: the Kubernetes HPA rule on CPU, desired = current x utilization / target.
    """
    target = 0.6
    return current * cpu_utilization / target
