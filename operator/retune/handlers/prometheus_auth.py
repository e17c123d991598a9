"""How the operator authenticates to its own Prometheus: from its environment (the chart
sets it from Secrets and values).

Only the operator's Prometheus (``--prometheus-url``) gets these credentials; a target that
names its own ``spec.profile.prometheusUrl`` is queried without them, so a target's author
can never point the operator's token at a server of their choosing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from retune.signals.metrics import MetricsProvider
from retune.signals.providers import provider_for

TOKEN_FILE_ENV = "RETUNE_PROMETHEUS_BEARER_TOKEN_FILE"
CA_FILE_ENV = "RETUNE_PROMETHEUS_CA_FILE"
HEADERS_ENV = "RETUNE_PROMETHEUS_HEADERS"
TENANT_ENV = "RETUNE_PROMETHEUS_TENANT"
TENANT_HEADER = "X-Scope-OrgID"  # Mimir, Cortex, Loki and Thanos's tenancy header


class PrometheusAuthError(ValueError):
    """An environment variable of the Prometheus connection is malformed."""


@dataclass(frozen=True)
class PrometheusAuth:
    """Credentials and TLS trust for the operator's Prometheus."""

    bearer_token_file: str | None = None
    """Re-read on every query: a mounted Secret or projected token rotates."""
    ca_file: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> PrometheusAuth:
        """Read ``RETUNE_PROMETHEUS_{BEARER_TOKEN_FILE,CA_FILE,HEADERS,TENANT}``; HEADERS is
        a JSON object of header names to values, TENANT sets ``X-Scope-OrgID``."""
        headers: dict[str, str] = {}
        raw = environ.get(HEADERS_ENV, "").strip()
        if raw:
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as error:
                raise PrometheusAuthError(f"{HEADERS_ENV} is not JSON: {error}") from None
            if not isinstance(parsed, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
            ):
                raise PrometheusAuthError(
                    f'{HEADERS_ENV} must be a JSON object of strings, e.g. {{"X-Team": "a"}}'
                )
            headers.update(parsed)
        if tenant := environ.get(TENANT_ENV, "").strip():
            headers[TENANT_HEADER] = tenant
        return cls(
            bearer_token_file=environ.get(TOKEN_FILE_ENV) or None,
            ca_file=environ.get(CA_FILE_ENV) or None,
            headers=headers,
        )


def connect(url: str | None, auth: PrometheusAuth | None) -> MetricsProvider:
    """The provider for Prometheus at ``url``, with ``auth`` if given."""
    if auth is None:
        return provider_for(url)
    return provider_for(
        url, bearer_token_file=auth.bearer_token_file, ca_file=auth.ca_file, headers=auth.headers
    )
