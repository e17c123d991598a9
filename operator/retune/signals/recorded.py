"""A provider that answers from recorded values (local mode, and tests).

Local mode has no Prometheus: the example's recorded profile maps each profile *name* to
a number. The profile is read with the same code as in the cluster, so the provider also
learns the profile's queries and answers a query by its text or by its name.
"""

from __future__ import annotations

from collections.abc import Mapping

from retune.signals.metrics import NoData, Sample, number


class RecordedProvider:
    """A :class:`~retune.signals.metrics.MetricsProvider` over a dict of recorded values.

    ``values`` maps a profile name (or a query's exact text) to a number; ``None`` (YAML
    ``null``) is recorded "no data", a non-finite or non-numeric value is ``Invalid``.
    ``queries`` (name -> PromQL) lets a query be answered by the name it is recorded under.
    A query that is neither recorded nor named is ``NoData``.
    """

    def __init__(
        self, values: Mapping[str, object], queries: Mapping[str, str] | None = None
    ) -> None:
        self._values = dict(values)
        self._names: dict[str, str] = {}
        for name, promql in (queries or {}).items():
            self._names.setdefault(promql, name)

    def __repr__(self) -> str:
        return f"RecordedProvider({len(self._values)} values)"

    def query(self, promql: str) -> Sample:
        """The recorded value for ``promql`` (by text, then by profile name)."""
        key = promql if promql in self._values else self._names.get(promql)
        if key is None or key not in self._values:
            return NoData(f"{promql!r} is not in the recorded profile")
        return number(self._values[key], f"recorded value of {key!r}")
