"""Write charts/retune/README.md from values.yaml: a table of every value documented by a
``# --`` comment (helm-docs's convention), with its type and default.

    python charts/chart_readme.py           # rewrite the README
    python charts/chart_readme.py --check   # exit 1 if the README is stale
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent / "retune"
README = CHART / "README.md"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):")


def documented_values(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) of each value with a ``# --`` comment, in file order."""
    values = yaml.safe_load(text)
    found: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    comment: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and comment is not None:
            comment.append(stripped[1:].strip())
            continue
        match = _KEY.match(line)
        if match is None:
            if not stripped:
                comment = None
            continue
        indent = len(match["indent"])
        path = [(i, k) for i, k in path if i < indent] + [(indent, match["key"])]
        if comment is not None:
            key = ".".join(k for _, k in path)
            _lookup(values, key)  # a documented key that is not a value fails here
            found.append((key, " ".join(comment)))
            comment = None
    return found


def _lookup(values: Any, key: str) -> Any:
    for part in key.split("."):
        values = values[part]
    return values


def _type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list"}.get(
        type(value), "object"
    )


def render(values_text: str, chart_text: str) -> str:
    """The README's text."""
    chart = yaml.safe_load(chart_text)
    values = yaml.safe_load(values_text)
    lines = [
        f"# {chart['name']}",
        "",
        chart["description"].strip(),
        "",
        f"Version {chart['version']}, app version {chart['appVersion']}, Kubernetes "
        f"`{chart['kubeVersion']}`. Installing, upgrading and the operator's permissions: "
        "[docs/install.md](../../docs/install.md); alerts and their runbooks: "
        "[docs/troubleshooting.md](../../docs/troubleshooting.md).",
        "",
        "<!-- Generated from values.yaml by charts/chart_readme.py: edit those, not this. -->",
        "",
        "## Values",
        "",
        "| Key | Type | Default | Description |",
        "|-----|------|---------|-------------|",
    ]
    for key, description in documented_values(values_text):
        value = _lookup(values, key)
        default = json.dumps(value, separators=(", ", ": "))
        cell = description.replace("|", "\\|")
        lines.append(f"| `{key}` | {_type(value)} | `{default}` | {cell} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render((CHART / "values.yaml").read_text(), (CHART / "Chart.yaml").read_text())
    if "--check" in argv:
        if not README.exists() or README.read_text() != text:
            print(f"{README} is stale: run python charts/chart_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
