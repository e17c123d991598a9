"""docs/rollout.md's scrape configuration is the one the end-to-end tests use."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.e2e.workload import POD_RELABEL_CONFIGS

ROLLOUT_DOC = Path(__file__).resolve().parents[1] / "docs" / "rollout.md"


def test_the_documented_pod_relabelling_is_what_the_end_to_end_tests_scrape_with() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", ROLLOUT_DOC.read_text(), re.S)
    configs = [yaml.safe_load(b) for b in blocks if "kubernetes_sd_configs" in b]
    assert len(configs) == 1, "docs/rollout.md should show one kubernetes_sd scrape config"
    documented = configs[0]["scrape_configs"][0]["relabel_configs"]
    assert documented == POD_RELABEL_CONFIGS


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
