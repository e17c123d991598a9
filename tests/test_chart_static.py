"""The Helm chart's files, checked without helm (tests/cluster/test_helm_chart.py runs helm)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "retune"


def test_chart_crd_is_the_generated_crd() -> None:
    # `make crd` regenerates crds/ and copies it into the chart.
    chart_crd = (CHART / "crds" / "optimizationtarget.yaml").read_text()
    assert chart_crd == (REPO / "crds" / "optimizationtarget.yaml").read_text(), (
        "charts/retune/crds/optimizationtarget.yaml differs from crds/: run `make crd`"
    )


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert (chart["name"], chart["version"], chart["appVersion"]) == ("retune", "0.1.0", "0.1.0")
    assert chart["kubeVersion"] == ">=1.28.0-0"


def test_every_default_value_is_in_the_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) == set(schema["properties"]) - {"global"}
