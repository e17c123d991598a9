"""The OptimizationTarget models: valid targets load, every mistake is reported by field."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from retune.spec import (
    SLO,
    Phase,
    Pricing,
    RolloutRecord,
    TargetStatus,
    TargetValidationError,
    cluster_problems,
    format_duration,
    load_target,
    parse_duration,
    parse_quantity,
    parse_target,
    validate_cron,
)

# The smallest target that runs locally: an inline seed and a local evaluator module.
MINIMAL_LOCAL = """\
apiVersion: retune.dev/v1alpha1
kind: OptimizationTarget
metadata:
  name: cache
spec:
  workloadRef:
    name: cache-server
  policy:
    entrypoint: choose_victim
    signature: "def choose_victim(entries, now) -> int"
    seed:
      inline: |
        def choose_victim(entries, now):
            return 0
  evaluator:
    module: evaluator.py
"""

# The smallest target for the cluster: a parameters policy from a ConfigMap, an image.
MINIMAL_CLUSTER = """\
apiVersion: retune.dev/v1alpha1
kind: OptimizationTarget
metadata:
  name: router
  namespace: shop
spec:
  workloadRef:
    name: frontend
  policy:
    kind: parameters
    entrypoint: route
    signature: "def route(request, *, alpha, depth) -> str"
    seed:
      configMapRef: {name: router-seed, key: policy.py}
    parameters:
      - {name: alpha, min: 0, max: 1}
      - {name: depth, min: 1, max: 8, integer: true}
  evaluator:
    image: ghcr.io/example/router-eval:1.0
"""

FULL = """\
apiVersion: retune.dev/v1alpha1
kind: OptimizationTarget
metadata:
  name: cache
  namespace: demo
  labels: {team: storage}
spec:
  workloadRef:
    kind: Deployment
    name: cache-server
    container: server
  policy:
    kind: code
    language: python
    entrypoint: choose_victim
    signature: "def choose_victim(entries, now) -> int"
    description: Pick the cache entry to evict.
    seed:
      file: seed_policy.py
    volume: {name: policy, mountPath: /etc/policy, fileName: evict.py}
  evaluator:
    module: evaluator.py
    image: ghcr.io/example/cache-eval:0.1
    command: [retune-evaluate, --verbose]
    resources: {cpu: 500m, memory: 512Mi}
    timeoutSeconds: 2m
    parallelism: 4
    params: {trace: zipf, sizes: [100, 1000], nested: {skew: 1.1}}
    nodeSelector: {pool: eval}
    affinity: {nodeAffinity: {}}
    tolerations: [{key: gpu, operator: Exists}]
    requiredSubsets: [scan, zipf]
    minImprovement: 0.02
    holdoutSeeds: 5
  profile:
    queries:
      hit_ratio: sum(rate(hits_total[5m])) / sum(rate(requests_total[5m]))
    recorded: profile.json
    prometheusUrl: http://prometheus.monitoring:9090
    interval: 1m
  hardware:
    labelKeys: [node.kubernetes.io/instance-type, nvidia.com/gpu.product]
    recorded: {node.kubernetes.io/instance-type: m5.large}
  slos:
    - name: latency
      query: histogram_quantile(0.99, sum by (le) (rate(latency_seconds_bucket[5m])))
      threshold: 0.2
      comparison: below
      for: 5m
    - name: availability
      errorQuery: sum(rate(requests_total{code=~"5.."}[{{window}}]))
      totalQuery: sum(rate(requests_total[{{window}}]))
      objective: 0.999
  search:
    seed: 7
    budget: {maxEvaluations: 300, maxUsd: 2.5, maxWallTime: 1h30m}
    mutator: llm
    models:
      - name: cheap
        role: mutate
        baseUrl: https://llm.example.com/v1
        model: small-coder
        apiKey: {env: LLM_KEY, secretKeyRef: {name: llm, key: token}}
        pricing: {inputPerMillion: 0.1, outputPerMillion: 0.4}
        maxConcurrency: 8
        timeoutSeconds: 30s
        maxOutputTokens: 1024
        temperature: 0.7
      - name: strong
        role: paradigm
        baseUrl: http://vllm.models.svc:8000/v1
        model: big-coder
        pricing: {gpuHourUsd: 3.6, tokensPerSecond: 1000}
    archive:
      cells: 128
      initialPopulation: 20
      structuralDescriptors: [loops, branches]
      behaviouralDescriptors: [scan]
    cascade: {enabled: true, quickThreshold: 0.8}
    tiering: {stagnationEvaluations: 30, paradigmEvery: 50, initialSeeds: 2}
    maxConcurrency: 6
  rollout:
    steps: [5, 20, 50, 100]
    interval: 2m
    analysis:
      - name: errors
        query: sum(rate(requests_total{namespace="{{namespace}}",track="{{track}}",code=~"5.."}[1m]))
        threshold: 0.01
        comparison: below
    failureLimit: 2
    noData: rollback
    noDataLimit: 5
  retune:
    paused: false
    onSloViolation: true
    drift: {threshold: 0.3, for: 15m}
    onHardwareChange: true
    hardwareSettleSeconds: 5m
    schedule: "0 3 * * sun"
    cooldown: 1h
    warmStart: false
"""


def write(tmp_path: Path, text: str, name: str = "target.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def section(text: str) -> str:
    """A block of YAML under ``spec:``, written flush left in the test."""
    return textwrap.indent(textwrap.dedent(text), "  ")


def problems_of(tmp_path: Path, text: str) -> list[str]:
    """The error lines load_target reports, without the file-name prefix."""
    path = write(tmp_path, text)
    with pytest.raises(TargetValidationError) as raised:
        load_target(path, check_files=False)
    prefix = f"{path}: "
    lines = str(raised.value).splitlines()
    assert all(line.startswith(prefix) for line in lines), lines
    assert len(lines) == len(raised.value.problems)
    return [line.removeprefix(prefix) for line in lines]


def broken(base: str, old: str, new: str) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


# -- valid targets ---------------------------------------------------------------------------


def test_full_target_parses_with_durations_in_seconds(tmp_path: Path) -> None:
    target = load_target(write(tmp_path, FULL), check_files=False)
    spec = target.spec
    assert target.metadata.namespace == "demo"
    assert spec.evaluator.timeout_seconds == 120
    assert spec.evaluator.memory_mb_limit == 512
    assert spec.evaluator.resources.cpu_cores == 0.5
    assert spec.profile.interval_seconds == 60
    assert spec.slos[0].for_seconds == 300
    assert spec.slos[0].kind == "threshold"
    assert spec.slos[1].kind == "burn_rate"
    assert spec.search.budget.max_wall_seconds == 5400.0
    assert spec.search.models[0].timeout_seconds == 30.0
    assert spec.rollout.interval_seconds == 120
    assert spec.retune.drift.for_seconds == 900
    assert spec.retune.cooldown_seconds == 3600
    assert spec.retune.hardware_settle_seconds == 300
    assert spec.retune.schedule == "0 3 * * sun"
    assert spec.evaluator.params["nested"] == {"skew": 1.1}


def test_minimal_targets_get_the_documented_defaults(tmp_path: Path) -> None:
    local = load_target(write(tmp_path, MINIMAL_LOCAL), check_files=False)
    spec = local.spec
    assert local.metadata.namespace == "default"
    assert spec.workload_ref.kind == "Deployment"
    assert spec.policy.kind == "code" and spec.policy.language == "python"
    assert spec.policy.volume.mount_path == "/etc/retune/policy"
    assert spec.policy.volume.file_name == "policy.py"
    assert spec.evaluator.command == ["retune-evaluate"]
    assert (spec.evaluator.resources.cpu, spec.evaluator.resources.memory) == ("1", "1Gi")
    assert spec.evaluator.timeout_seconds == 60 and spec.evaluator.parallelism == 2
    assert spec.evaluator.min_improvement == 0.01 and spec.evaluator.holdout_seeds == 3
    assert spec.profile.interval_seconds == 300
    assert "nvidia.com/gpu.product" in spec.hardware.label_keys
    assert spec.search.budget.max_evaluations == 200
    assert spec.search.mutator == "builtin"
    assert spec.search.archive.cells == 64
    assert spec.search.archive.structural_descriptors == ["loops", "branches", "depth", "math_ops"]
    assert spec.search.cascade.quick_threshold == 0.9
    assert spec.rollout.steps == [10, 25, 50] and spec.rollout.no_data == "hold"
    assert spec.retune.drift.for_seconds == 600 and spec.retune.cooldown_seconds == 1800
    assert local.status is None

    cluster = load_target(write(tmp_path, MINIMAL_CLUSTER, "cluster.yaml"))
    assert [p.name for p in cluster.spec.policy.parameters] == ["alpha", "depth"]
    assert cluster_problems(cluster) == []
    assert [p.path for p in cluster_problems(local)] == ["spec.evaluator.image"]


def test_defaults_are_not_shared_between_instances(tmp_path: Path) -> None:
    first = load_target(write(tmp_path, MINIMAL_LOCAL), check_files=False)
    second = load_target(write(tmp_path, MINIMAL_LOCAL, "again.yaml"), check_files=False)
    first.spec.rollout.steps.append(75)
    first.spec.hardware.label_keys.clear()
    assert second.spec.rollout.steps == [10, 25, 50]
    assert second.spec.hardware.label_keys


def test_a_dumped_target_parses_back_to_the_same_target(tmp_path: Path) -> None:
    target = load_target(write(tmp_path, FULL), check_files=False)
    again = parse_target(target.to_dict(), "roundtrip")
    assert again.model_dump() == target.model_dump()
    assert target.to_dict()["spec"]["slos"][0]["for"] == 300


def test_an_api_object_with_server_metadata_and_status_parses() -> None:
    data = yaml.safe_load(MINIMAL_CLUSTER)
    data["metadata"].update(
        uid="1234",
        generation=3,
        resourceVersion="99",
        creationTimestamp="2025-01-01T00:00:00Z",
        managedFields=[{"manager": "kubectl"}],
    )
    data["status"] = {
        "phase": "Canary",
        "observedGeneration": 3,
        "bestScore": 0.91,
        "ledger": {"evaluations": 40, "usd": 0.12, "models": {"cheap": {"calls": 9}}},
        "rollout": {"revision": "router-policy-abc", "step": 1, "share": 25},
        "futureField": True,
    }
    target = parse_target(data, "shop/router")
    assert target.metadata.generation == 3
    assert target.status is not None and target.status.phase is Phase.CANARY
    assert target.status.ledger.models["cheap"].calls == 9
    assert target.status.rollout is not None and target.status.rollout.share == 25
    assert target.source == "shop/router"


def test_relative_paths_resolve_against_the_target_file(tmp_path: Path) -> None:
    (tmp_path / "evaluator.py").write_text("")
    target = load_target(write(tmp_path, MINIMAL_LOCAL))
    assert target.resolve_path(target.spec.evaluator.module or "") == tmp_path / "evaluator.py"


# -- one problem per mistake -----------------------------------------------------------------


def test_several_mistakes_are_all_reported_in_file_order(tmp_path: Path) -> None:
    text = broken(FULL, "maxEvaluations: 300", "maxEvaluations: 0")
    text = broken(text, "comparison: below\n      for: 5m", "comparison: less\n      for: 5mins")
    text = broken(text, "parallelism: 4", "parallelism: 0")
    text = broken(text, "cpu: 500m", "cpu: lots")
    assert problems_of(tmp_path, text) == [
        "spec.evaluator.resources.cpu: must be a Kubernetes quantity such as 500m, 2 or 1Gi"
        " (got 'lots')",
        "spec.evaluator.parallelism: must be >= 1 (got 0)",
        "spec.slos[0].comparison: must be one of 'below', 'above' (got 'less')",
        "spec.slos[0].for: must be a duration such as 30s, 5m or 1h30m, or a number of seconds"
        " (got '5mins')",
        "spec.search.budget.maxEvaluations: must be >= 1 (got 0)",
    ]


def test_the_error_string_is_one_line_per_mistake_prefixed_by_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, broken(FULL, "maxEvaluations: 300", "maxEvaluations: 0"))
    with pytest.raises(TargetValidationError) as raised:
        load_target(path, check_files=False)
    assert str(raised.value) == f"{path}: spec.search.budget.maxEvaluations: must be >= 1 (got 0)"
    [problem] = raised.value.problems
    assert problem.path == "spec.search.budget.maxEvaluations"
    assert problem.message == "must be >= 1 (got 0)"
    assert (
        problem.line
        == FULL.splitlines().index(
            "    budget: {maxEvaluations: 300, maxUsd: 2.5, maxWallTime: 1h30m}"
        )
        + 1
    )


def test_unknown_fields_suggest_the_intended_one(tmp_path: Path) -> None:
    text = broken(FULL, "maxEvaluations: 300", "maxEvals: 300")
    text = broken(text, "    interval: 2m\n", "    intervall: 2m\n")
    text = broken(text, "  workloadRef:", "  workload_ref:")
    text = broken(text, "    warmStart: false", "    warmStart: false\n    frobnicate: 1")
    assert problems_of(tmp_path, text) == [
        "spec.workloadRef: required field missing",
        "spec.workload_ref: unknown field 'workload_ref' (did you mean 'workloadRef'?)",
        "spec.search.budget.maxEvals: unknown field 'maxEvals' (did you mean 'maxEvaluations'?)",
        "spec.rollout.intervall: unknown field 'intervall' (did you mean 'interval'?)",
        "spec.retune.frobnicate: unknown field 'frobnicate' (expected one of: paused,"
        " onSloViolation, drift, onHardwareChange, hardwareSettleSeconds, schedule, cooldown,"
        " warmStart, spendLimit)",
    ]


def test_bad_durations_enums_and_bounds(tmp_path: Path) -> None:
    text = broken(
        MINIMAL_LOCAL,
        "    module: evaluator.py",
        "    module: evaluator.py\n    timeoutSeconds: 1.5s\n  workloadRef2: {}",
    )
    assert problems_of(tmp_path, text) == [
        "spec.evaluator.timeoutSeconds: must be a whole number of seconds (got '1.5s')",
        "spec.workloadRef2: unknown field 'workloadRef2' (did you mean 'workloadRef'?)",
    ]
    text = broken(
        MINIMAL_LOCAL, "    name: cache-server", "    kind: StatefulSet\n    name: cache-server"
    )
    text += "  rollout: {steps: [50, 25], noData: ignore, interval: -5s}\n"
    assert problems_of(tmp_path, text) == [
        "spec.workloadRef.kind: must be 'Deployment' (got 'StatefulSet')",
        "spec.rollout.steps: must increase from step to step (got [50, 25])",
        "spec.rollout.interval: must be a duration such as 30s, 5m or 1h30m, or a number of"
        " seconds (got '-5s')",
        "spec.rollout.noData: must be one of 'hold', 'rollback' (got 'ignore')",
    ]


def test_yaml_syntax_errors_give_the_line(tmp_path: Path) -> None:
    text = broken(
        MINIMAL_LOCAL, "    module: evaluator.py", "    module: evaluator.py\n  oops: [1, 2"
    )
    [problem] = problems_of(tmp_path, text)
    assert problem.startswith("invalid YAML at line ")
    assert "line 18" in problem or "line 19" in problem

    text = MINIMAL_LOCAL + "  retune:\n    schedule: */5 * * * *\n"
    [problem] = problems_of(tmp_path, text)
    assert problem.startswith("invalid YAML at line 18, column 16:")
    assert "must be quoted" in problem


def test_duplicate_keys_are_reported_instead_of_silently_overwritten(tmp_path: Path) -> None:
    text = MINIMAL_LOCAL + "  search:\n    seed: 1\n    seed: 2\n"
    assert problems_of(tmp_path, text) == [
        "spec.search.seed: duplicate key 'seed' (first at line 18)"
    ]


def test_llm_mutator_needs_a_mutate_tier(tmp_path: Path) -> None:
    text = MINIMAL_LOCAL + section(
        """\
          search:
            mutator: llm
            models:
              - name: strong
                role: paradigm
                baseUrl: https://llm.example.com/v1
                model: big
                pricing: {inputPerMillion: 3, outputPerMillion: 15}
        """
    )
    assert problems_of(tmp_path, text) == [
        "spec.search.models: mutator 'llm' needs at least one model tier with role 'mutate'"
    ]


def test_parameters_policy_needs_parameters(tmp_path: Path) -> None:
    text = broken(MINIMAL_CLUSTER, "      - {name: alpha, min: 0, max: 1}\n", "")
    text = broken(text, "      - {name: depth, min: 1, max: 8, integer: true}\n", "")
    text = broken(text, "    parameters:\n", "")
    assert problems_of(tmp_path, text) == [
        "spec.policy.parameters: required when kind is 'parameters' (list at least one)"
    ]
    text = broken(MINIMAL_CLUSTER, "{name: depth, min: 1, max: 8", "{name: depth, min: 8, max: 1")
    assert problems_of(tmp_path, text) == [
        "spec.policy.parameters[1].max: must be greater than min (got min 8.0, max 1.0)"
    ]


def test_rules_across_fields(tmp_path: Path) -> None:
    text = broken(MINIMAL_LOCAL, "      inline: |", "      file: seed.py\n      inline: |")
    text = broken(text, "    module: evaluator.py", "    parallelism: 3")
    text += section(
        """\
          hardware:
            labelKeys: [kubernetes.io/arch, nvidia.com/gfd.timestamp]
          slos:
            - {name: p99, query: up, comparison: above}
            - {name: errors, errorQuery: 'sum(rate(errors[5m]))', totalQuery: 'x[{{window}}]',
               objective: 1.5}
          search:
            budget: {}
            models:
              - name: cheap
                baseUrl: https://llm.example.com/v1
                model: small
                pricing: {inputPerMillion: 1, gpuHourUsd: 2}
          retune:
            schedule: "0 25 * * *"
        """
    )
    assert problems_of(tmp_path, text) == [
        "spec.policy.seed: set exactly one of file, inline or configMapRef (got file, inline)",
        "spec.evaluator: set module (local mode), image (cluster), or both",
        "spec.hardware.labelKeys[1]: 'nvidia.com/gfd.timestamp' changes without the hardware"
        " changing; remove it",
        "spec.slos[0].threshold: required field missing",
        "spec.slos[1].objective: must be < 1 (got 1.5)",
        "spec.search.budget: set at least one of maxEvaluations, maxUsd or maxWallTime",
        "spec.search.models[0].pricing: set either inputPerMillion/outputPerMillion or"
        " gpuHourUsd/tokensPerSecond",
        "spec.retune.schedule: hour field: 25 is outside 0-23",
    ]


def test_burn_rate_queries_must_use_the_window_placeholder(tmp_path: Path) -> None:
    text = MINIMAL_LOCAL + section(
        """\
          slos:
            - {name: errors, errorQuery: 'sum(rate(errors[5m]))', totalQuery: 'x[{{window}}]',
               objective: 0.99}
          rollout:
            analysis:
              - {name: e, query: 'x{pod="{{pod}}"}', threshold: 1}
        """
    )
    assert problems_of(tmp_path, text) == [
        "spec.slos[0].errorQuery: must use {{window}} where the range goes, e.g."
        " rate(errors_total[{{window}}])",
        "spec.rollout.analysis[0].query: unknown placeholder {{pod}} (allowed: {{namespace}},"
        " {{target}}, {{track}})",
    ]


def test_missing_required_sections_and_wrong_shapes(tmp_path: Path) -> None:
    text = "apiVersion: retune.dev/v1\nkind: OptimizationTarget\nmetadata: {name: Bad_Name}\n"
    assert problems_of(tmp_path, text) == [
        "apiVersion: must be 'retune.dev/v1alpha1' (got 'retune.dev/v1')",
        "metadata.name: must be a lowercase DNS name (a-z, 0-9, '-' and '.') (got 'Bad_Name')",
        "spec: required field missing",
    ]
    text = broken(
        MINIMAL_LOCAL, "  evaluator:\n    module: evaluator.py", "  evaluator: [evaluator.py]"
    )
    assert problems_of(tmp_path, text) == ["spec.evaluator: must be a mapping (got a list)"]
    assert problems_of(tmp_path, "- just\n- a list\n") == [
        "expected a mapping with apiVersion, kind, metadata, spec (got a list)"
    ]
    assert problems_of(tmp_path, "") == ["the file is empty; expected an OptimizationTarget"]


def test_a_null_section_means_its_defaults(tmp_path: Path) -> None:
    target = load_target(
        write(tmp_path, MINIMAL_LOCAL + "  search:\n  rollout:\n"), check_files=False
    )
    assert target.spec.search.budget.max_evaluations == 200


def test_files_the_spec_points_to_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    (tmp_path / "evaluator.py").write_text("")
    with pytest.raises(TargetValidationError) as raised:
        load_target(path)
    assert [(p.path, p.message) for p in raised.value.problems] == [
        ("spec.policy.seed.file", f"file not found: {tmp_path / 'seed_policy.py'}"),
        ("spec.profile.recorded", f"file not found: {tmp_path / 'profile.json'}"),
    ]


def test_an_unreadable_file_is_one_problem_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(TargetValidationError) as raised:
        load_target(tmp_path / "missing.yaml")
    assert (
        str(raised.value)
        == f"{tmp_path / 'missing.yaml'}: cannot read the file: No such file or directory"
    )


# -- values and helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        ("30", 30.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("0", 0.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 m", "5min", "-1s", "1d", "1h-5m", True, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duration_formatting_and_quantities() -> None:
    assert [format_duration(s) for s in (0, 45, 300, 5400, 86400, 1.5)] == [
        "0s",
        "45s",
        "5m",
        "1h30m",
        "24h",
        "1.5s",
    ]
    assert parse_quantity("500m") == 0.5
    assert parse_quantity("1Gi") == 2**30
    assert parse_quantity("2k") == 2000
    assert parse_quantity("1e3") == 1000


@pytest.mark.parametrize(
    "quantity",
    ["500m", "2", "1.5", ".5", "1Gi", "15963Mi", "16384000Ki", "2k", "3M", "1e3", "1E2", "250u",
     "100n", "2T", "1Pi", "1Ei", "0.5Gi"],
)  # fmt: skip
def test_quantities_read_as_the_kubernetes_client_reads_them(quantity: str) -> None:
    # retune.spec keeps its own parser: the layer contract keeps the Kubernetes client out
    # of the spec, which evaluation pods import without it. This pins the two together.
    from kubernetes.utils import parse_quantity as kubernetes_parse_quantity

    assert parse_quantity(quantity) == pytest.approx(float(kubernetes_parse_quantity(quantity)))


@pytest.mark.parametrize(
    "schedule",
    ["0 3 * * *", "*/15 * * * *", "0 0 1 jan,jul *", "30 2 * * mon-fri", "@daily", "0 0 L * *",
     "5/20 8-9 * jan,jul 7", "0 0 29 2 *"],
)  # fmt: skip
def test_cron_schedules(schedule: str) -> None:
    assert validate_cron(schedule)


def test_cron_schedules_are_normalised() -> None:
    assert validate_cron("  0   3 * *  SUN ") == "0 3 * * SUN"
    assert validate_cron(" @Weekly") == "@weekly"


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ("* * * *", "must be a cron schedule with 5 fields"),
        ("0 0 * * * *", "must be a cron schedule with 5 fields"),  # no seconds field
        ("60 * * * *", "minute field: 60 is outside 0-59"),
        ("0 0 0 * *", "day-of-month field: 0 is outside 1-31"),
        ("0 1,25 * * *", "hour field: 25 is outside 0-23"),
        ("0 0 * * 8", "day-of-week field: 8 is outside 0-7"),
        ("0 5-1 * * *", "hour field: '5-1' is not a number in 0-23, '*', a range a-b from low"),
        ("*/0 * * * *", "minute field: '*/0' is not a number in 0-59"),
        ("0 0 * foo *", "month field: 'foo' is not a number in 1-12 or jan-dec"),
        ("@reboot", "must be a cron schedule with 5 fields"),
        ("0 0 30 2 *", "day-of-month field: no month in '2' has day '30', so the schedule"),
        ("0 0 31 4,6,9,11 *", "day-of-month field: no month in '4,6,9,11' has day '31'"),
    ],
)
def test_bad_cron_schedules(schedule: str, problem: str) -> None:
    with pytest.raises(ValueError) as error:
        validate_cron(schedule)
    assert str(error.value).startswith(problem)


def test_self_hosted_pricing_charges_gpu_time_per_token() -> None:
    assert Pricing(input_per_million=0.5, output_per_million=2.0).per_million() == (0.5, 2.0)
    # $3.60/h at 1000 tokens/s: $0.001 per second, $1 per million tokens.
    assert Pricing(gpu_hour_usd=3.6, tokens_per_second=1000).per_million() == pytest.approx(
        (1.0, 1.0)
    )


def test_slo_defaults_and_helpers() -> None:
    slo = SLO(
        name="errors", error_query="e[{{window}}]", total_query="t[{{ window }}]", objective=0.999
    )
    assert [
        (w.long_window_seconds, w.short_window_seconds, w.burn_rate) for w in slo.burn_rate_windows
    ] == [
        (3600, 300, 14.4),
        (21600, 1800, 6.0),
    ]
    assert slo.render_error_queries(300) == ("e[5m]", "t[5m]")
    threshold = SLO(name="p99", query="q", threshold=0.2)
    assert threshold.holds(0.2) and not threshold.holds(0.3)


def test_status_conditions_move_their_transition_time_only_on_change() -> None:
    status = TargetStatus()
    t0, t1 = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    assert status.set_condition("Ready", "False", "Searching", "searching", now=t0)
    assert not status.set_condition("Ready", "False", "Searching", "searching", now=t1)
    assert status.set_condition("Ready", "False", "Validating", "validating", now=t1)
    ready = status.condition("Ready")
    assert ready is not None and ready.last_transition_time == t0
    status.set_condition("Ready", "True", "Promoted", "", now=t1)
    assert status.condition("Ready").last_transition_time == t1  # type: ignore[union-attr]
    for index in range(12):
        status.record_rollout(RolloutRecord(revision=f"r{index}", outcome="Promoted"))
    assert [r.revision for r in status.history] == [f"r{i}" for i in range(2, 12)]
    data = yaml.safe_load(MINIMAL_CLUSTER)
    data["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert data["status"]["conditions"][0]["lastTransitionTime"] == "2025-01-02T00:00:00Z"
    reread = parse_target(data, "shop/router").status
    assert reread is not None and reread.conditions[0].last_transition_time == t1


def test_required_subsets_is_still_read_as_required_subscores() -> None:
    from retune.spec.evaluator import EvaluatorSpec

    old = {"module": "e.py", "requiredSubsets": ["burst"]}
    spec = EvaluatorSpec.model_validate(old, by_alias=True, by_name=False)
    assert spec.required_subscores == ["burst"] and spec.required_subsets is None
    both = {**old, "requiredSubscores": ["steady"]}
    with pytest.raises(ValueError, match="old name of requiredSubscores"):
        EvaluatorSpec.model_validate(both, by_alias=True, by_name=False)
