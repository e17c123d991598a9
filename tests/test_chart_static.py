"""The Helm chart's files, checked without helm (tests/cluster/test_helm_chart.py runs helm)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

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


def _chart_readme() -> Any:
    spec = importlib.util.spec_from_file_location(
        "chart_readme", REPO / "charts" / "chart_readme.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_readme_is_generated_from_the_values() -> None:
    readme = _chart_readme()
    values_text = (CHART / "values.yaml").read_text()
    expected = readme.render(values_text, (CHART / "Chart.yaml").read_text())
    assert (CHART / "README.md").read_text() == expected, (
        "charts/retune/README.md is stale: run python charts/chart_readme.py"
    )
    # A changed comment changes the README: the check can fail.
    changed = values_text.replace("# -- The operator's image.", "# -- Another image.")
    assert readme.render(changed, (CHART / "Chart.yaml").read_text()) != expected


def test_every_value_is_documented() -> None:
    documented = {
        key for key, _ in _chart_readme().documented_values((CHART / "values.yaml").read_text())
    }
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key, value in values.items():
        if isinstance(value, dict) and value and key not in documented:
            missing = [f"{key}.{sub}" for sub in value if f"{key}.{sub}" not in documented]
            assert not missing, f"values.yaml has no `# --` comment for {missing}"
        else:
            assert key in documented, f"values.yaml has no `# --` comment for {key}"
