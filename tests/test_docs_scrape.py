"""The scrape configurations of docs/rollout.md (the workload's pods) and docs/operator.md
(the operator's) are the ones the end-to-end tests use."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.e2e.monitoring import OPERATOR_RELABEL_CONFIGS
from tests.e2e.workload import POD_RELABEL_CONFIGS

ROLLOUT_DOC = Path(__file__).resolve().parents[1] / "docs" / "rollout.md"
OPERATOR_DOC = ROLLOUT_DOC.with_name("operator.md")


def _scrape_configs(page: Path) -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S)
    return [yaml.safe_load(b) for b in blocks if "kubernetes_sd_configs" in b]


def test_the_documented_pod_relabelling_is_what_the_end_to_end_tests_scrape_with() -> None:
    configs = _scrape_configs(ROLLOUT_DOC)
    assert len(configs) == 1, "docs/rollout.md should show one kubernetes_sd scrape config"
    documented = configs[0]["scrape_configs"][0]["relabel_configs"]
    assert documented == POD_RELABEL_CONFIGS


def test_the_documented_operator_scrape_is_what_the_end_to_end_tests_scrape_with() -> None:
    configs = _scrape_configs(OPERATOR_DOC)
    assert len(configs) == 1, "docs/operator.md should show one kubernetes_sd scrape config"
    documented = configs[0]["scrape_configs"][0]["relabel_configs"]
    assert documented == OPERATOR_RELABEL_CONFIGS


def test_the_documented_pod_monitor_maps_the_track_label() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", ROLLOUT_DOC.read_text(), re.S)
    monitors = [yaml.safe_load(b) for b in blocks if "kind: PodMonitor" in b]
    assert len(monitors) == 1
    [endpoint] = monitors[0]["spec"]["podMetricsEndpoints"]
    track = {
        "sourceLabels": ["__meta_kubernetes_pod_label_retune_dev_track"],
        "targetLabel": "track",
    }
    assert track in endpoint["relabelings"]
