"""docs/gitops.md and docs/kubectl.md say what the code does: the field manager, the fields
retune owns, the resource's group and kind, every plugin command."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from retune.kubectl import _parser
from retune.rollout import POLICY_REVISION_ANNOTATION, TRACK_LABEL
from retune.rollout.apps import FIELD_MANAGER
from retune.spec import GROUP, KIND, PolicyVolume

DOCS = Path(__file__).resolve().parents[1] / "docs"


def yaml_blocks(page: str) -> list[dict[str, object]]:
    blocks = re.findall(r"```yaml\n(.*?)```", (DOCS / page).read_text(), re.S)
    return [yaml.safe_load(block) for block in blocks]


def test_argo_cd_is_told_to_leave_retunes_fields_and_their_live_values_alone() -> None:
    [application] = [b for b in yaml_blocks("gitops.md") if b.get("kind") == "Application"]
    spec = application["spec"]  # type: ignore[index]
    [ignored] = spec["ignoreDifferences"]
    assert ignored["managedFieldsManagers"] == [FIELD_MANAGER]
    assert f'select(.name == "{PolicyVolume().name}")' in ignored["jqPathExpressions"][0]
    assert "RespectIgnoreDifferences=true" in spec["syncPolicy"]["syncOptions"]


def test_the_health_check_is_keyed_by_the_resources_group_and_kind() -> None:
    [config] = [b for b in yaml_blocks("gitops.md") if "data" in b]
    [key] = config["data"]  # type: ignore[index]
    assert key == f"resource.customizations.health.{GROUP}_{KIND}"
    script = config["data"][key]  # type: ignore[index]
    for status in ("Healthy", "Progressing", "Suspended", "Degraded"):
        assert f'"{status}"' in script


def test_the_owned_fields_table_names_retunes_keys() -> None:
    text = (DOCS / "gitops.md").read_text()
    assert f'"{POLICY_REVISION_ANNOTATION}"' in text and f'"{TRACK_LABEL}"' in text
    assert f"field manager `{FIELD_MANAGER}`" in text


def test_every_plugin_command_is_documented() -> None:
    text = (DOCS / "kubectl.md").read_text()
    [commands] = [a for a in _parser()._actions if a.dest == "command"]
    for name in commands.choices:  # type: ignore[union-attr]
        assert f"kubectl retune {name} NAME" in text or f"/ `{name} NAME`" in text, name
