"""The OptimizationTarget resource (``retune.dev/v1alpha1``): the single source of truth.

pydantic models of the spec and status, the loaders that turn YAML or API objects into
them with per-field problems, and the value formats (durations, quantities, cron). The CRD
in ``crds/`` is generated from these models by :mod:`retune.crd`.
"""

from retune.spec.base import KeyRef, SpecModel, StatusModel, render_query
from retune.spec.errors import Problem, TargetValidationError
from retune.spec.evaluator import EvaluatorSpec, Resources
from retune.spec.loading import (
    cluster_problems,
    load_target,
    missing_files,
    parse_target,
    read_yaml,
)
from retune.spec.policy import (
    ParameterSpec,
    PolicySource,
    PolicySpec,
    PolicyVolume,
    WorkloadRef,
)
from retune.spec.rollout import (
    ANALYSIS_PLACEHOLDERS,
    AnalysisQuery,
    DriftSpec,
    RetuneSpec,
    RolloutSpec,
)
from retune.spec.search import (
    ApiKeySource,
    ArchiveSpec,
    BudgetSpec,
    CascadeSpec,
    ModelTier,
    Pricing,
    SearchSpec,
    TieringSpec,
)
from retune.spec.signals import (
    DEFAULT_BURN_RATE_WINDOWS,
    DEFAULT_HARDWARE_LABEL_KEYS,
    SLO,
    VOLATILE_LABEL_KEYS,
    BurnRateWindow,
    Comparison,
    HardwareSpec,
    ProfileSpec,
    within,
)
from retune.spec.status import (
    HISTORY_LIMIT,
    Condition,
    ConditionStatus,
    ConditionType,
    LedgerStatus,
    ModelUsageStatus,
    Phase,
    RolloutRecord,
    RolloutStatus,
    TargetStatus,
)
from retune.spec.target import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ObjectMeta,
    OptimizationTarget,
    TargetSpec,
)
from retune.spec.units import format_duration, parse_duration, parse_quantity, validate_cron

__all__ = [
    "ANALYSIS_PLACEHOLDERS",
    "API_VERSION",
    "DEFAULT_BURN_RATE_WINDOWS",
    "DEFAULT_HARDWARE_LABEL_KEYS",
    "GROUP",
    "HISTORY_LIMIT",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "SLO",
    "VERSION",
    "VOLATILE_LABEL_KEYS",
    "AnalysisQuery",
    "ApiKeySource",
    "ArchiveSpec",
    "BudgetSpec",
    "BurnRateWindow",
    "CascadeSpec",
    "Comparison",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "DriftSpec",
    "EvaluatorSpec",
    "HardwareSpec",
    "KeyRef",
    "LedgerStatus",
    "ModelTier",
    "ModelUsageStatus",
    "ObjectMeta",
    "OptimizationTarget",
    "ParameterSpec",
    "Phase",
    "PolicySource",
    "PolicySpec",
    "PolicyVolume",
    "Pricing",
    "Problem",
    "ProfileSpec",
    "Resources",
    "RetuneSpec",
    "RolloutRecord",
    "RolloutSpec",
    "RolloutStatus",
    "SearchSpec",
    "SpecModel",
    "StatusModel",
    "TargetSpec",
    "TargetStatus",
    "TargetValidationError",
    "TieringSpec",
    "WorkloadRef",
    "cluster_problems",
    "format_duration",
    "load_target",
    "missing_files",
    "parse_duration",
    "parse_quantity",
    "parse_target",
    "read_yaml",
    "render_query",
    "validate_cron",
    "within",
]
