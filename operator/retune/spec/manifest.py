"""A target file as the cluster takes it (``retune manifest``).

A target written for ``retune run`` points at files beside it: the seed policy
(``seed.file``), the evaluator module, the recorded profile. In the cluster there is no
such directory, so the operator refuses a seed given as a file (``cluster_problems``).
:func:`cluster_manifest` turns the file into the object to apply: the seed program
inlined, the namespace set if asked, every other field as written (the local-only ones,
``evaluator.module`` and the ``recorded`` profile and hardware, are ignored in the
cluster and kept, so one file serves both). What cannot work in the cluster whatever is
inlined -- no evaluator image -- is refused, each problem with its field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from retune.spec.errors import TargetValidationError
from retune.spec.loading import cluster_problems, load_target, parse_target


def cluster_manifest(path: str | Path, *, namespace: str | None = None) -> str:
    """The YAML of the target in ``path`` for ``kubectl apply -f -``.

    Raises :class:`TargetValidationError` for a target ``retune check`` would refuse, and
    for one the cluster would: the output, read back, has no cluster problem left.
    """
    path = Path(path)
    target = load_target(path)  # every field and the files it names
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    seed = data["spec"]["policy"]["seed"]
    if target.spec.policy.seed.file is not None:
        program = target.resolve_path(target.spec.policy.seed.file).read_text(encoding="utf-8")
        seed.pop("file")
        seed["inline"] = program
    if namespace is not None:
        data.setdefault("metadata", {})["namespace"] = namespace
    text = yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=10_000)
    again = parse_target(yaml.safe_load(text), str(path), base_dir=path.parent)
    problems = cluster_problems(again)
    if problems:
        raise TargetValidationError(problems, str(path))
    return text


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the program, PromQL, descriptions) as literal blocks; the
    emitter quotes instead any that a block cannot hold exactly (trailing spaces, tabs)."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _string)
