"""The continuous-tuning story's fixture layer: one namespace's cache, its traffic, its
OptimizationTarget, and what the operator did to them. Shared by the end-to-end tests and
the cluster demo, so that both tell the same story.

The target is examples/01's, made for this cluster: the seed is the policy the cache runs
(its ConfigMap), the profile is what the load generator sends, the SLO and the canary
analysis read the cache's own metrics, and budgets and intervals are small.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from retune.spec import GROUP, PLURAL, VERSION
from tests.cluster.processes import wait_until
from tests.e2e.environment import E2E
from tests.e2e.harness import EvaluationRecorder, cache_target, status_of
from tests.e2e.workload import MIX, Traffic, deploy_cache, evaluator_memory_fraction

HIT_RATIO = (
    'sum(rate(cache_requests_total{{namespace="{namespace}",result="hit"{track}}}[{window}]))'
    ' / sum(rate(cache_requests_total{{namespace="{namespace}"{track}}}[{window}]))'
)
WARM = 'sum(cache_requests_total{{namespace="{namespace}"{track}}}) > {requests}'
"""True once the pods have served ``requests`` reads: a cold cache is not judged."""
EVENT_LAG = 30.0
"""Seconds an Event may trail the status it reports (kopf posts it from a queue)."""
SHIFTED = {"scan_fraction": 0.5, "key_space": 8000}
"""The load generator's mix after the shift: scan-heavy traffic over more keys. Its hit
ratio settles about 20 s after the shift, well below the SLO's (0.13 to 0.18 against
0.27 to 0.45 before, over 20 s)."""


def hit_ratio_query(namespace: str, window: str) -> str:
    """The cache's request hit ratio in ``namespace``."""
    return HIT_RATIO.format(namespace=namespace, track="", window=window)


def canary_hit_ratio_query(window: str, warm_after: int) -> str:
    """An analysis query: the hit ratio of ``{{track}}``'s pods, once they have served
    ``warm_after`` reads (before that, no data: the canary is held, not failed, while its
    cache fills)."""
    values = {"namespace": "{{namespace}}", "track": ',track="{{track}}"'}
    ratio = HIT_RATIO.format(window=window, **values)
    return f"({ratio}) and ({WARM.format(requests=warm_after, **values)})"


def continuous_target(
    namespace: str,
    name: str = "cache",
    *,
    budget: int = 10,
    steps: tuple[int, ...] = (50, 100),
    step_interval: str = "2s",
    canary_floor: float = 0.005,
    no_data_limit: int = 12,
    slo_threshold: float = 0.22,
    drift_threshold: float = 10.0,
) -> dict[str, Any]:
    """examples/01's target, tuned continuously. The SLO and hardware triggers are on; the
    drift threshold is out of reach unless given (a shifted mix is then an SLO story, not
    a drift one: drift would otherwise win the race, the profile being read every 10 s)."""
    target = cache_target(namespace, name, budget)
    spec = target["spec"]
    spec["policy"]["seed"] = {"configMapRef": {"name": "cache-policy", "key": "policy.py"}}
    evaluator = spec["evaluator"]
    # (cache_memory_fraction is set by CacheStory.apply, from the real node's memory)
    evaluator["params"].update(requests_full=8000, requests_quick=3000)
    evaluator.update(minImprovement=0.0, holdoutSeeds=1)
    spec["profile"] = {
        "queries": {key: f'max(cache_profile_{key}{{namespace="{namespace}"}})' for key in MIX},
        "interval": "10s",
    }
    spec["slos"] = [
        {
            "name": "hit-ratio",
            "query": hit_ratio_query(namespace, "20s"),
            "threshold": slo_threshold,
            "comparison": "above",
            "for": "6s",
        }
    ]
    spec["rollout"] = {
        "steps": list(steps),
        "interval": step_interval,
        "analysis": [
            {
                "name": "hit-ratio",
                "query": canary_hit_ratio_query("10s", warm_after=400),
                "threshold": canary_floor,
                "comparison": "above",
            },
            {
                "name": "policy-errors",
                "query": (
                    'sum(rate(cache_policy_errors_total{namespace="{{namespace}}",'
                    'track="{{track}}"}[20s]))'
                ),
                "threshold": 0,
                "comparison": "below",
            },
        ],
        "failureLimit": 2,
        "noData": "hold",
        "noDataLimit": no_data_limit,
    }
    spec["retune"] = {
        "cooldown": "20s",
        "hardwareSettleSeconds": 4,
        "drift": {"threshold": drift_threshold, "for": "4s"},
        "warmStart": True,
    }
    return dict(target)


@dataclass
class TimelineEntry:
    at: datetime
    type: str
    reason: str
    message: str


@dataclass
class CacheStory:
    """The cache of one namespace, with its traffic and its target."""

    env: E2E
    namespace: str
    name: str = "cache"
    traffic: Traffic | None = None
    recorder: EvaluationRecorder | None = None
    actions: list[TimelineEntry] = field(default_factory=list)
    """What the scenes did to the cluster, for the timeline."""

    @property
    def api(self) -> client.ApiClient:
        return self.env.api

    # -- given -----------------------------------------------------------------------------
    def deploy(self, replicas: int = 1) -> CacheStory:
        """The cache running its LRU policy, under the load generator's traffic."""
        deploy_cache(self.api, self.namespace, replicas)
        env = self.env
        self.traffic = Traffic(
            env.cluster, env.prometheus, env.exporter, self.namespace, env.log_dir
        ).start()
        self.traffic.wait_for_pods({None})
        profile = f'max(cache_profile_key_space{{namespace="{self.namespace}"}})'
        env.prometheus.wait_for_query(profile, timeout=30)
        self.recorder = EvaluationRecorder(self.api, self.namespace).start()
        return self

    def given(self, what: str) -> None:
        """Say what a scene starts from (the timeline shows it)."""
        self.actions.append(TimelineEntry(datetime.now(UTC), "Given", "", what))

    def when(self, what: str) -> None:
        """Say what a scene does next (the timeline shows it); the lines after it do it."""
        self.actions.append(TimelineEntry(datetime.now(UTC), "Action", "", what))

    def then(self, what: str) -> None:
        """Say what is expected of the step just taken; the asserts after it check it, at
        once (the timeline shows it once they held, beside the Events that made it so)."""
        self.actions.append(TimelineEntry(datetime.now(UTC), "Then", "", what))

    def apply(self, target: dict[str, Any]) -> None:
        # the evaluator sizes its simulated cache as this share of the node's memory
        params = target["spec"]["evaluator"]["params"]
        params["cache_memory_fraction"] = evaluator_memory_fraction(self.env.cluster)
        self.when(f"OptimizationTarget {self.name} is applied")
        client.CustomObjectsApi(self.api).create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, target
        )

    def patch_spec(self, spec: dict[str, Any]) -> None:
        client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name, {"spec": spec}
        )

    def target(self) -> dict[str, Any]:
        return dict(
            client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )
        )

    def annotate(self, key: str, value: str | None = "true") -> None:
        body = {"metadata": {"annotations": {key: value}}}
        client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name, body
        )

    def generation(self, name: str | None = None) -> int:
        """A Deployment's ``metadata.generation`` (-1 when it does not exist): it changes
        when its template does."""
        found = self.deployment(name)
        return int(found["metadata"]["generation"]) if found is not None else -1

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.stop()
        if self.traffic is not None:
            self.traffic.stop()

    # -- then ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return status_of(self.api, self.namespace, self.name)

    def wait(
        self, check: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """Poll the status until ``check`` holds; fail with the status and the log."""
        seen: dict[str, Any] = {}

        def holds() -> bool:
            seen.clear()
            seen.update(self.status())
            return check(seen)

        try:
            wait_until(holds, timeout, what, interval=0.5)
        except TimeoutError as error:
            log = self.env.operator.log(80)
            raise AssertionError(
                f"{error}\nstatus: {json.dumps(seen, indent=1)}\noperator log:\n{log}"
            ) from None
        return dict(seen)

    def outcomes(self) -> list[str]:
        """The finished rollouts' outcomes, oldest first."""
        return [record["outcome"] for record in self.status().get("history", [])]

    def deployment(self, name: str | None = None) -> dict[str, Any] | None:
        """The workload (or another Deployment of the namespace) as API JSON."""
        try:
            found = client.AppsV1Api(self.api).read_namespaced_deployment(
                name or "cache", self.namespace, _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(json.loads(found.data))

    def policy_code(self, revision: str) -> str:
        """The program a revision ConfigMap holds."""
        found = client.CoreV1Api(self.api).read_namespaced_config_map(revision, self.namespace)
        return str(found.data["policy.py"])

    def policy_of(self, deployment: dict[str, Any]) -> str | None:
        """The ConfigMap a Deployment's policy volume mounts."""
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            if volume["name"] == "retune-policy":
                return str(volume["configMap"]["name"])
        return None

    def events(self) -> list[TimelineEntry]:
        """The target's Events, oldest first."""
        items = (
            client.CoreV1Api(self.api)
            .list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.kind=OptimizationTarget,involvedObject.name={self.name}",
            )
            .items
        )
        entries = [
            TimelineEntry(
                at=event.event_time or event.last_timestamp or event.metadata.creation_timestamp,
                type=event.type or "",
                reason=event.reason or "",
                message=event.message or "",
            )
            for event in items
            if event.reason != "Logging"  # kopf's own log lines
        ]
        return sorted(entries, key=lambda entry: entry.at)

    def timeline(self) -> list[TimelineEntry]:
        """The Events and the scenes' actions, oldest first."""
        return sorted(self.events() + self.actions, key=lambda entry: entry.at)

    def reasons(self) -> list[str]:
        return [entry.reason for entry in self.events()]

    def saw(self, *reasons: str, within: float = EVENT_LAG) -> list[str]:
        """The Events' reasons, oldest first, once every one of ``reasons`` is among them.

        The operator posts a reconcile's Events after it writes the status they report,
        through kopf's posting queue: a status just read may not have its Events yet.
        """
        wait_until(
            lambda: set(reasons) <= set(self.reasons()), within, f"the Events {list(reasons)}"
        )
        return self.reasons()


def promoted(count: int) -> Callable[[dict[str, Any]], bool]:
    """A status with ``count`` promotions, back in Stable."""

    def check(status: dict[str, Any]) -> bool:
        history = [r for r in status.get("history", []) if r["outcome"] == "Promoted"]
        return len(history) >= count and status.get("phase") == "Stable"

    return check


def finished(outcome: str) -> Callable[[dict[str, Any]], bool]:
    """A status whose last rollout ended with ``outcome``, back in Stable."""

    def check(status: dict[str, Any]) -> bool:
        history = status.get("history", [])
        return bool(history) and history[-1]["outcome"] == outcome and status["phase"] == "Stable"

    return check
