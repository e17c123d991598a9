"""retune: continuous, per-deployment policy tuning for Kubernetes."""

__version__ = "0.1.0"
