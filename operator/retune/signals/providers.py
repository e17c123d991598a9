"""Picking a metrics backend: Prometheus when there is a URL, else a recorded profile."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from retune.signals.metrics import MetricsProvider
from retune.signals.recorded import RecordedProvider


def provider_for(
    url: str | None,
    *,
    recorded: Mapping[str, object] | None = None,
    queries: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    bearer_token: str | None = None,
    bearer_token_file: str | Path | None = None,
    headers: Mapping[str, str] | None = None,
    verify_tls: bool = True,
    ca_file: str | Path | None = None,
) -> MetricsProvider:
    """The provider for a target: Prometheus at ``url`` if given (the connection options
    apply to it), else the ``recorded`` values (name -> number, answered by name through
    ``queries``). Raises ``ValueError`` when there is neither."""
    if url:
        # Imported here so that code which only needs the pure signals never loads the
        # HTTP client stack.
        from retune.signals.prometheus import PrometheusProvider

        return PrometheusProvider(
            url,
            timeout=timeout,
            bearer_token=bearer_token,
            bearer_token_file=bearer_token_file,
            headers=headers,
            verify_tls=verify_tls,
            ca_file=ca_file,
        )
    if recorded is not None:
        return RecordedProvider(recorded, queries)
    raise ValueError(
        "no metrics source: set spec.profile.prometheusUrl (or the operator's Prometheus URL), "
        "or spec.profile.recorded for local mode"
    )
