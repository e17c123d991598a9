"""Reading a target from YAML or from a Kubernetes object, with every mistake reported."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from retune.spec.errors import (
    Loc,
    Problem,
    TargetValidationError,
    format_path,
    problems_from_validation_error,
)
from retune.spec.target import OptimizationTarget

# The most values a target may hold once its aliases are expanded: a real target holds a
# few hundred; ten nested aliases of ten each (the "billion laughs") hold 10^10.
MAX_EXPANDED_VALUES = 100_000


def parse_target(
    data: Mapping[str, Any],
    source: str,
    *,
    base_dir: Path | None = None,
    lines: dict[Loc, int] | None = None,
) -> OptimizationTarget:
    """Validate a target given as plain data (parsed YAML, or an object from the API).

    ``source`` names where it came from in error messages (a file name, ``ns/name``);
    ``base_dir`` is where relative paths in the spec are resolved from. Raises
    :class:`TargetValidationError` listing every problem found.
    """
    if not isinstance(data, Mapping):
        kind = "a list" if isinstance(data, list) else type(data).__name__
        problem = Problem(
            "", f"expected a mapping with apiVersion, kind, metadata, spec (got {kind})"
        )
        raise TargetValidationError([problem], source)
    try:
        # Keys must be the camelCase ones: the API server would silently drop snake_case.
        target = OptimizationTarget.model_validate(dict(data), by_alias=True, by_name=False)
    except ValidationError as error:
        problems = problems_from_validation_error(error, OptimizationTarget, lines)
        raise TargetValidationError(problems, source) from None
    target.bind_source(source, base_dir)
    return target


def load_target(path: str | Path, *, check_files: bool = True) -> OptimizationTarget:
    """Read and validate a target YAML file.

    With ``check_files``, the files the spec points to (seed policy, evaluator module,
    recorded profile) must exist. Raises :class:`TargetValidationError` for unreadable
    files, YAML syntax errors (with line and column) and every invalid field.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise TargetValidationError(
            [Problem("", f"cannot read the file: {reason}")], source
        ) from None
    data, lines, problems = read_yaml(text)
    if data is None and problems:
        raise TargetValidationError(problems, source)
    try:
        target = parse_target(data, source, base_dir=path.parent, lines=lines)
    except TargetValidationError as error:
        raise TargetValidationError(_in_file_order([*problems, *error.problems]), source) from None
    if check_files:
        problems += missing_files(target, lines)
    if problems:
        raise TargetValidationError(problems, source)
    return target


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    # Problems without a line (a missing top-level key) go last.
    return sorted(problems, key=lambda problem: problem.line or float("inf"))


def read_yaml(text: str) -> tuple[Any, dict[Loc, int], list[Problem]]:
    """Parse one YAML document; return the data, the line of every key path, and problems
    (syntax errors and duplicate keys, which YAML parsers otherwise resolve silently)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, [Problem("", "the file is empty; expected an OptimizationTarget")]
        size = expanded_size(node)
        if size > MAX_EXPANDED_VALUES:
            message = (
                f"the YAML holds more than {MAX_EXPANDED_VALUES} values once its aliases are "
                "expanded (anchors used inside anchors); write the values out instead"
            )
            return None, {}, [Problem("", message)]
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        return None, {}, [_syntax_problem(error)]
    except yaml.YAMLError as error:
        return None, {}, [Problem("", f"invalid YAML: {error}")]
    except RecursionError:
        return None, {}, [Problem("", "the YAML is nested too deeply")]
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    problems: list[Problem] = []
    _index(node, (), lines, problems, set())
    return data, lines, problems


def expanded_size(node: yaml.Node) -> int:
    """How many values ``node`` holds with every alias expanded, computed visiting each
    node once (an alias is the node it names, shared); a cycle counts as too many."""
    sizes: dict[int, int] = {}

    def size(current: yaml.Node) -> int:
        known = sizes.get(id(current))
        if known is not None:
            return known
        sizes[id(current)] = MAX_EXPANDED_VALUES + 1  # seen again while inside: a cycle
        total = 1
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                total += size(key) + size(value)
                if total > MAX_EXPANDED_VALUES:
                    break
        elif isinstance(current, yaml.SequenceNode):
            for item in current.value:
                total += size(item)
                if total > MAX_EXPANDED_VALUES:
                    break
        sizes[id(current)] = total
        return total

    return size(node)


def _syntax_problem(error: yaml.MarkedYAMLError) -> Problem:
    mark = error.problem_mark or error.context_mark
    what = error.problem or error.context or "syntax error"
    hint = ""
    if any(word in f"{what} {error.context}" for word in ("alias", "anchor")):
        hint = " (a value starting with '*' or '&', such as a cron schedule, must be quoted)"
    if mark is None:
        return Problem("", f"invalid YAML: {what}{hint}")
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    return Problem("", f"invalid YAML at {where}: {what}{hint}", mark.line + 1)


def _index(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[Problem], seen_nodes: set[int]
) -> None:
    # An alias is the node it names: index it once, where it is first written.
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a complex key; validation reports it
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                message = f"duplicate key {key!r} (first at line {seen[key]})"
                problems.append(Problem(format_path((*loc, key)), message, line))
                continue
            seen[key] = line
            lines[(*loc, key)] = line
            _index(value_node, (*loc, key), lines, problems, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            _index(item, (*loc, index), lines, problems, seen_nodes)


def missing_files(target: OptimizationTarget, lines: dict[Loc, int] | None = None) -> list[Problem]:
    """Problems for spec paths that point at files which do not exist (local mode)."""
    spec = target.spec
    referenced: list[tuple[Loc, str | None]] = [
        (("spec", "policy", "seed", "file"), spec.policy.seed.file),
        (("spec", "evaluator", "module"), spec.evaluator.module),
        (("spec", "profile", "recorded"), spec.profile.recorded),
    ]
    problems = []
    for loc, relative in referenced:
        if relative is not None and not target.resolve_path(relative).is_file():
            where = target.resolve_path(relative)
            line = (lines or {}).get(loc)
            problems.append(Problem(format_path(loc), f"file not found: {where}", line))
    return problems


def cluster_problems(target: OptimizationTarget) -> list[Problem]:
    """Problems that only matter in the cluster, where the target file's directory does
    not exist: the seed must be inline or in a ConfigMap, and the evaluator an image."""
    problems = []
    if target.spec.policy.seed.file is not None:
        message = (
            "a file cannot be read in the cluster; use inline or configMapRef "
            "(`retune manifest` inlines it)"
        )
        problems.append(Problem("spec.policy.seed.file", message))
    if target.spec.evaluator.image is None:
        message = "required in the cluster (module is only used in local mode)"
        problems.append(Problem("spec.evaluator.image", message))
    return problems
