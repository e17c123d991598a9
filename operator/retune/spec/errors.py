"""Validation problems a user can act on: which field, what was expected, what was found."""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from retune.spec.base import PATTERN_DESCRIPTIONS

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One mistake in a target: where (a camelCase path such as ``spec.slos[0].for``), what."""

    path: str
    message: str
    line: int | None = None
    """Line in the YAML file the mistake is on, when known."""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class TargetValidationError(Exception):
    """A target that cannot be used; ``str()`` gives one line per problem."""

    def __init__(self, problems: Sequence[Problem], source: str = "target") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{self.source}: {problem}" for problem in self.problems)


def format_path(loc: Iterable[str | int]) -> str:
    """``("spec", "slos", 0, "for")`` -> ``spec.slos[0].for``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(part, str) and part.replace("_", "a").replace("-", "a").isalnum():
            text += f".{part}" if text else part
        else:
            text += f"[{str(part)!r}]"
    return text


def problems_from_validation_error(
    error: ValidationError,
    model: type[BaseModel],
    lines: dict[Loc, int] | None = None,
) -> list[Problem]:
    """Turn pydantic's errors into one :class:`Problem` per mistake."""
    problems: list[Problem] = []
    for detail in error.errors(include_url=False):
        loc: Loc = tuple(part for part in detail["loc"] if part != "[key]")
        context = detail.get("ctx") or {}
        if detail["type"] == "retune" and context.get("field"):
            extra = str(context["field"]).split(".")
            loc = (*loc, *(int(part) if part.isdigit() else part for part in extra))
        message = _message(detail, model, loc)
        problem = Problem(format_path(loc), message, _line_of(loc, lines or {}))
        if problem not in problems:
            problems.append(problem)
    return problems


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def describe(value: Any) -> str:
    """A value as it would be written in YAML, for ``(got ...)``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


_SIMPLE_MESSAGES = {
    "missing": "required field missing",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "datetime_type": "must be a timestamp",
    "datetime_parsing": "must be an RFC 3339 timestamp",
    "datetime_from_date_parsing": "must be an RFC 3339 timestamp",
}

_BOUNDS = {
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
}


def _message(detail: Any, model: type[BaseModel], loc: Loc) -> str:
    kind: str = detail["type"]
    context = detail.get("ctx") or {}
    value = detail.get("input")
    got = f" (got {describe(value)})"
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        return _unknown_field(model, loc)
    if kind in _SIMPLE_MESSAGES:
        return _SIMPLE_MESSAGES[kind] + got
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        return f"must be {sign} {describe(context[key])}{got}"
    if kind in ("literal_error", "enum"):
        expected = str(context.get("expected", ""))
        if " or " not in expected:
            return f"must be {expected}{got}"
        return f"must be one of {expected.replace(' or ', ', ')}{got}"
    if kind == "string_pattern_mismatch":
        pattern = context.get("pattern", "")
        wanted = PATTERN_DESCRIPTIONS.get(pattern, f"match {pattern}")
        return f"must be {wanted}{got}"
    if kind == "string_too_short":
        return "must not be empty" if context.get("min_length") == 1 else detail["msg"]
    if kind == "string_too_long":
        return f"must be at most {context['max_length']} characters long"
    if kind == "too_short":
        count = context.get("min_length", 1)
        return f"must have at least {count} item{'s' if count != 1 else ''}"
    if kind == "too_long":
        return f"must have at most {context.get('max_length')} items"
    if kind == "retune":
        return str(detail["msg"])
    message = str(detail["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message[:1].lower() + message[1:]


def _unknown_field(model: type[BaseModel], loc: Loc) -> str:
    key = str(loc[-1]) if loc else ""
    parent = model_at(model, loc[:-1])
    if parent is None:
        return f"unknown field {key!r}"
    known = [_key_of(name, info) for name, info in parent.model_fields.items()]
    if to_camel(key) in known and to_camel(key) != key:
        return f"unknown field {key!r} (did you mean {to_camel(key)!r}?)"
    # A typo rarely changes the first letter; requiring it avoids far-fetched suggestions.
    close = [
        name
        for name in difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        if name[:1].lower() == key[:1].lower()
    ][:1]
    if not close:
        lowered = {name.lower(): name for name in known}
        close = [lowered[key.lower()]] if key.lower() in lowered else []
    if close:
        return f"unknown field {key!r} (did you mean {close[0]!r}?)"
    return f"unknown field {key!r} (expected one of: {', '.join(known)})"


def _key_of(name: str, info: Any) -> str:
    alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
    return str(alias or name)


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc`` below ``model``, if any."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next(
                (
                    info.annotation
                    for name, info in current.model_fields.items()
                    if part in (name, _key_of(name, info))
                ),
                None,
            )
            if field is None:
                return None
            current = field
        elif origin is list and isinstance(part, int):
            current = get_args(current)[0]
        elif origin is dict:
            current = get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None
