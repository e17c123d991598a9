"""Event reasons: one registry (``retune.spec.events``), the docs and the chart agree with
it."""

from __future__ import annotations

import re
from pathlib import Path

from retune.spec.events import WARNINGS, EventReason, event_type

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CHART = ROOT / "charts" / "retune"


def _listed() -> tuple[list[str], list[str]]:
    """docs/operator.md's list of Events: the Normal ones, then the warnings."""
    text = (DOCS / "operator.md").read_text()
    start = text.index("Events (`operator/retune/spec/events.py`")
    paragraph = text[start : text.index("\n\n", start)]
    normal, warnings = paragraph.split("and as warnings")
    names = re.compile(r"`([A-Z][A-Za-z]+)`")
    return names.findall(normal), names.findall(warnings)


def test_the_operator_docs_list_every_event_reason_once_with_its_type() -> None:
    normal, warnings = _listed()
    assert len(normal + warnings) == len(set(normal + warnings))
    assert set(normal) == {r.value for r in EventReason if event_type(r) == "Normal"}
    assert set(warnings) == {r.value for r in WARNINGS}


def test_every_warning_says_what_to_do_in_troubleshooting() -> None:
    text = (DOCS / "troubleshooting.md").read_text()
    missing = [r.value for r in WARNINGS if not re.search(rf"\b{r.value}\b", text)]
    assert not missing, f"docs/troubleshooting.md does not mention {missing}"


def test_every_reason_the_chart_counts_is_one_the_operator_posts() -> None:
    texts = [(CHART / "templates" / "prometheusrule.yaml").read_text()]
    texts.append((CHART / "dashboards" / "retune.json").read_text())
    named = set()
    for text in texts:
        for found in re.findall(r'reason=~?\\?"([^"\\]+)', text):
            named.update(found.split("|"))
    assert named, "the chart names no Event reason: this check has nothing to check"
    assert named <= {r.value for r in EventReason}
