"""The run report in a real browser (Debian's chromium, headless).

Given a short `retune run` of examples/01 with the LLM tiers of the stand-in model server
(so there is spend to chart), when its report.html is opened, then it
loads with no console error and requests nothing beyond its own file, every chart has rendered
into SVG, the example's baselines are drawn, and no score is drawn below its axis.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.browser import chromium, visit
from tests.llm_server import running_mutation_server
from tests.test_llm_e2e import retune_run

PLOTS = ["score-evaluations", "score-usd", "subscores", "archive", "spend"]

pytestmark = pytest.mark.slow

# What the page says about itself once rendered: for every chart, its SVG layers, its
# trace names and y-axis range, and the lowest y drawn.
PROBE = """(() => {
  const plots = {};
  for (const div of document.querySelectorAll('.plotly-graph-div')) {
    const ys = div._fullData.flatMap(t => Array.from(t.y || []).filter(y => typeof y === 'number'));
    plots[div.id.replace('plot-', '')] = {
      svgs: div.querySelectorAll('svg.main-svg').length,
      points: div.querySelectorAll('.scatterlayer .point, .barlayer .point').length,
      traces: div._fullData.map(t => t.name || ''),
      yrange: div._fullLayout.yaxis.range,
      ylowest: ys.length ? Math.min(...ys) : null,
    };
  }
  return {
    plots,
    title: document.title,
    diffLines: document.querySelectorAll('pre .l.add, pre .l.del').length,
    validation: document.body.innerText.includes('Validation on held-out seeds'),
  };
})()"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("report")
    with running_mutation_server(seed=1) as server:
        retune_run(server, output)
    return output / "report.html"


def test_the_report_renders_offline_with_every_chart(report: Path) -> None:
    if chromium() is None and not os.environ.get("CI"):
        pytest.skip("chromium is not installed: run tests/install-browser (make test does)")
    started = time.monotonic()
    page = visit(report, PROBE)
    print(f"browser: {time.monotonic() - started:.1f} s")

    assert page.errors == []
    # data: URLs are plotly's own feature checks, inside the page
    assert [url for url in page.requests if not url.startswith("data:")] == [report.as_uri()]
    seen = page.value
    assert seen["title"] == "retune report: cache-eviction"
    assert sorted(seen["plots"]) == sorted(PLOTS)
    for name, plot in seen["plots"].items():
        assert plot["svgs"] >= 1, name
        assert plot["points"] > 0, name
    scores = seen["plots"]["score-evaluations"]
    assert "seed (the stable policy): 0.4600" in scores["traces"]
    assert any(trace.startswith("LFU (baseline)") for trace in scores["traces"])
    # Nothing under the axis: low scores sit on its floor, marked, never at zero.
    low, _ = scores["yrange"]
    assert low > 0.3 and scores["ylowest"] >= low
    assert seen["diffLines"] > 0 and seen["validation"]


def test_the_report_is_one_file(report: Path) -> None:
    text = report.read_text()
    assert "<script src" not in text and "<link" not in text
    result = json.loads((report.parent / "result.json").read_text())
    assert f"<th>cost_usd</th><td>{result['cost_usd']:.6g}</td>" in text
