"""docs/gitops.md and docs/kubectl.md say what the code does: the field manager, the fields
retune owns, the resource's group and kind, every plugin command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
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


def _lua(value: Any) -> str:
    """A Python value as a Lua table constructor."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "{" + ",".join(_lua(item) for item in value) + "}"
    return "{" + ",".join(f"[{json.dumps(k)}]={_lua(v)}" for k, v in value.items()) + "}"


def _ready(value: str, message: str) -> dict[str, str]:
    return {"type": "Ready", "status": value, "message": message}


HEALTH_CASES = [
    ({}, "Progressing", "waiting for the retune operator"),
    ({"phase": "Stable", "observedGeneration": 1}, "Progressing", "has not seen the latest"),
    ({"phase": "Searching", "conditions": [_ready("True", "r1 serves; searching")]}, "Healthy", "r1 serves"),
    ({"phase": "Searching", "conditions": [_ready("False", "searching")]}, "Progressing", "searching"),
    ({"phase": "Canary", "conditions": [_ready("False", "rolling r2 out")]}, "Progressing", "rolling r2"),
    ({"phase": "AwaitingApproval", "conditions": [_ready("True", "r2 waits")]}, "Suspended", "r2 waits"),
    ({"phase": "Degraded", "conditions": [{"type": "Degraded", "status": "True", "message": "bad"}]}, "Degraded", "bad"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "health", "message"), HEALTH_CASES)
def test_the_health_check_reads_the_status_as_argo_cd_would(
    status: dict[str, Any], health: str, message: str
) -> None:
    lua = shutil.which("lua5.1")  # Argo CD runs health checks in gopher-lua, a Lua 5.1
    if lua is None:
        message = "lua5.1 is not installed: run 'make browser' (Debian: apt-get install lua5.1)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    [config] = [b for b in yaml_blocks("gitops.md") if "data" in b]
    [script] = config["data"].values()  # type: ignore[attr-defined]
    obj = {"metadata": {"generation": 2}, "status": {"observedGeneration": 2, **status}}
    if not status:
        obj.pop("status")
    program = (
        f"obj = {_lua(obj)}\nlocal function check()\n{script}\nend\n"
        "local hs = check()\nprint(hs.status .. '|' .. hs.message)\n"
    )
    done = subprocess.run([lua, "-"], input=program, capture_output=True, text=True, check=True)
    got_health, got_message = done.stdout.strip().split("|", 1)
    assert got_health == health and message in got_message


def test_the_owned_fields_table_names_retunes_keys() -> None:
    text = (DOCS / "gitops.md").read_text()
    assert f'"{POLICY_REVISION_ANNOTATION}"' in text and f'"{TRACK_LABEL}"' in text
    assert f"field manager `{FIELD_MANAGER}`" in text


def test_every_plugin_command_is_documented() -> None:
    text = (DOCS / "kubectl.md").read_text()
    [commands] = [a for a in _parser()._actions if a.dest == "command"]
    for name in commands.choices:  # type: ignore[union-attr]
        assert f"kubectl retune {name} NAME" in text or f"/ `{name} NAME`" in text, name
