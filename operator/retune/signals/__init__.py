"""What retune observes: the workload profile, SLOs and canary analysis (through a metrics
provider), the hardware under the workload (node labels -> fingerprint), and drift.

The Prometheus backend (:mod:`retune.signals.prometheus`) is not imported here; get it
through :func:`provider_for` or import it directly.
"""

from retune.signals.analysis import AnalysisReport, AnalysisResult, analyse, analyse_query
from retune.signals.drift import DriftDetector, DriftVerdict, MetricDrift
from retune.signals.hardware import HardwareClass, HardwareFingerprint, hardware_context
from retune.signals.metrics import (
    BadQuery,
    Invalid,
    MetricsProvider,
    NoData,
    Problem,
    Sample,
    Unavailable,
    Value,
)
from retune.signals.nodes import (
    NodeInfo,
    Placement,
    Taint,
    Toleration,
    node_info,
    nodes_for_workload,
)
from retune.signals.profile import ProfileReading, read_profile
from retune.signals.providers import provider_for
from retune.signals.recorded import RecordedProvider
from retune.signals.slo import (
    BurnRateVerdict,
    SLOTracker,
    SLOVerdict,
    ThresholdVerdict,
    WindowPair,
    evaluate_burn_rate,
)

__all__ = [
    "AnalysisReport",
    "AnalysisResult",
    "BadQuery",
    "BurnRateVerdict",
    "DriftDetector",
    "DriftVerdict",
    "HardwareClass",
    "HardwareFingerprint",
    "Invalid",
    "MetricDrift",
    "MetricsProvider",
    "NoData",
    "NodeInfo",
    "Placement",
    "Problem",
    "ProfileReading",
    "RecordedProvider",
    "SLOTracker",
    "SLOVerdict",
    "Sample",
    "Taint",
    "ThresholdVerdict",
    "Toleration",
    "Unavailable",
    "Value",
    "WindowPair",
    "analyse",
    "analyse_query",
    "evaluate_burn_rate",
    "hardware_context",
    "node_info",
    "nodes_for_workload",
    "provider_for",
    "read_profile",
]
