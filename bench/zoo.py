"""A zoo of model behaviours for the stand-in server: the ways real models answer badly.

A behaviour is chosen per model by its name: ``small:first-block`` is the ``small`` model
with the ``first-block`` behaviour, ``large:drift+verbose`` the ``large`` model with two.
Each one is a transformation of what the well-behaved stand-in would do, seeded by the
answer's own RNG, so a run replays exactly. Standard library only.

Style behaviours stay on a follow-up (a request that carries an earlier answer of the
model: a repair round); mistake behaviours (marked below) are corrected on a follow-up,
as a real model corrects a mistake it is told about.

| behaviour          | what the model does                                                  |
|--------------------|----------------------------------------------------------------------|
| ``first-block``    | edits the first fenced code block of the conversation, whatever the headings say |
| ``longest-block``  | edits the longest fenced code block                                  |
| ``last-block``     | edits the last fenced code block                                     |
| ``wrong-format``   | a whole program when asked for SEARCH/REPLACE, SEARCH/REPLACE when asked for a program |
| ``drift``          | SEARCH/REPLACE blocks re-indented (two spaces or tabs), trailing blanks, blank lines dropped |
| ``bare``           | code blocks without a language tag, or programs without any fence    |
| ``alternatives``   | two or three alternative code blocks (or sets of blocks) in one answer |
| ``foreign-imports``| (mistake) imports ``heapq``/``collections``/``itertools``; uses them in 30% of answers |
| ``undefined-helper``| (mistake) in 40% of answers, calls a helper it never defines        |
| ``verbose``        | (mistake) long reasoning before the code and a long explanation after: hits ``max_tokens`` |
| ``reasoning``      | a reasoning model: a 400 for ``max_tokens`` or a ``temperature`` other than 1 |
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

BEHAVIOURS = (
    "first-block",
    "longest-block",
    "last-block",
    "wrong-format",
    "drift",
    "bare",
    "alternatives",
    "foreign-imports",
    "undefined-helper",
    "verbose",
    "reasoning",
)
MISTAKES = frozenset({"foreign-imports", "undefined-helper", "verbose"})
BLOCK_CHOICE = {"first-block": 0, "last-block": -1}
DEFAULT_OUTPUT_LIMIT = 2048

_ANY_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)\n[ \t]*```", re.DOTALL)
_WORDS = [
    "the",
    "policy",
    "weighs",
    "recency",
    "against",
    "frequency",
    "and",
    "size",
    "so",
    "the",
    "eviction",
    "order",
    "depends",
    "on",
    "how",
    "these",
    "terms",
    "interact",
    "under",
    "the",
    "scan",
    "phase",
    "where",
    "one",
    "time",
    "reads",
    "push",
    "hot",
    "objects",
    "out",
    "of",
    "the",
    "cache",
    "and",
    "the",
    "steady",
    "phase",
    "where",
    "a",
    "stable",
    "working",
    "set",
    "dominates",
]


def split_model(name: str) -> tuple[str, tuple[str, ...]]:
    """``"small:drift+bare"`` as ``("small", ("drift", "bare"))``; ``ValueError`` for an
    unknown behaviour."""
    base, _, rest = name.partition(":")
    behaviours = tuple(b for b in rest.split("+") if b)
    unknown = [b for b in behaviours if b not in BEHAVIOURS]
    if unknown:
        raise ValueError(f"unknown behaviour {unknown[0]!r}; known: {', '.join(BEHAVIOURS)}")
    return base, behaviours


def active(behaviours: tuple[str, ...], follow_up: bool) -> frozenset[str]:
    """The behaviours that act on this answer: mistakes are corrected on a follow-up."""
    return frozenset(b for b in behaviours if not (follow_up and b in MISTAKES))


def reasoning_refusal(request: dict[str, object]) -> str | None:
    """What a reasoning model's endpoint answers with a 400 for ``request``, if anything
    (OpenAI's own wording)."""
    if "max_tokens" in request:
        return (
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead."
        )
    temperature = request.get("temperature")
    if temperature is not None and temperature != 1:
        return (
            f"Unsupported value: 'temperature' does not support {temperature} with this "
            "model. Only the default (1) value is supported."
        )
    return None


def program_to_edit(prompt: str, behaviours: frozenset[str], default: str | None) -> str | None:
    """The program the model edits: a fenced block chosen regardless of headings, or the
    one under the parent heading (``default``)."""
    blocks = [m.group(1) + "\n" for m in _ANY_FENCE.finditer(prompt)]
    if not blocks:
        return default
    for name, index in BLOCK_CHOICE.items():
        if name in behaviours:
            return blocks[index]
    if "longest-block" in behaviours:
        return max(blocks, key=len)
    return default


def wants_diff(prompt: str, behaviours: frozenset[str], marker: str) -> bool:
    asked = marker in prompt
    return not asked if "wrong-format" in behaviours else asked


def spoil_program(program: str, behaviours: frozenset[str], rng: random.Random) -> str:
    """The mistakes a model makes in the program itself."""
    if "undefined-helper" in behaviours and rng.random() < 0.4:
        program = _call_undefined_helper(program)
    if "foreign-imports" in behaviours:
        program = _add_imports(program, use=rng.random() < 0.3)
    return program


def dress_diff(blocks: str, behaviours: frozenset[str], rng: random.Random) -> str:
    """SEARCH/REPLACE text as the model writes it."""
    if "drift" in behaviours:
        blocks = _drift(blocks, rng)
    if "bare" in behaviours:
        blocks = "```\n" + blocks + "\n```"
    return blocks


def dress_program(code: str, behaviours: frozenset[str], rng: random.Random) -> str:
    """A whole program as the model writes it (fenced or not)."""
    if "bare" in behaviours:
        return code.rstrip() if rng.random() < 0.5 else "```\n" + code.rstrip() + "\n```"
    return "```python\n" + code.rstrip() + "\n```"


def with_alternatives(
    first: str, make_another: Callable[[], str | None], behaviours: frozenset[str]
) -> str:
    """One answer holding several alternatives, the preferred one last."""
    if "alternatives" not in behaviours:
        return first
    others = [text for text in (make_another(), make_another()) if text]
    if not others:
        return first
    parts = [f"Option {i + 1}:\n\n{text}" for i, text in enumerate([*others, first])]
    return "\n\n".join(parts) + f"\n\nI would go with option {len(parts)}."


def pad_verbose(answer: str, behaviours: frozenset[str], limit: int, rng: random.Random) -> str:
    """Long reasoning before the answer and a long explanation after it: between 30% and
    130% of the output limit before, so some answers are cut before their code ends."""
    if "verbose" not in behaviours:
        return answer
    before = _prose(rng, int(limit * rng.uniform(0.3, 1.3)))
    after = _prose(rng, limit // 2)
    return f"Let me think this through carefully.\n\n{before}\n\n{answer}\n\nWhy this works:\n{after}\n"


# -- the edits ---------------------------------------------------------------------------
def _call_undefined_helper(program: str) -> str:
    lines = program.split("\n")
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith("return ") and line.startswith(" "):
            indent = line[: len(line) - len(stripped)]
            lines[i] = f"{indent}return clamp_score({stripped[len('return ') :]})"
            return "\n".join(lines)
    return program


def _add_imports(program: str, *, use: bool) -> str:
    imports = "import heapq\nfrom collections import defaultdict\nimport itertools\n"
    if use:
        match = re.search(r"^def \w+\(.*?\):[^\n]*\n", program, re.MULTILINE | re.DOTALL)
        if match:
            body = "    counts = defaultdict(int)\n"
            program = program[: match.end()] + body + program[match.end() :]
    return imports + program


def _drift(blocks: str, rng: random.Random) -> str:
    tabs = rng.random() < 0.3
    out = []
    for line in blocks.split("\n"):
        if line.startswith(("<<<<<<<", "=======", ">>>>>>>")):
            out.append(line)
            continue
        if not line.strip():
            if rng.random() < 0.5:
                continue  # blank lines dropped
            out.append(line)
            continue
        width = len(line) - len(line.lstrip(" "))
        indent = "\t" * (width // 4) if tabs else " " * (width // 2)
        trailing = " " * rng.randint(0, 2)
        out.append(indent + line.strip() + trailing)
    return "\n".join(out)


def _prose(rng: random.Random, tokens: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(max(1, tokens))]
    sentences = [" ".join(words[i : i + 16]).capitalize() + "." for i in range(0, len(words), 16)]
    return " ".join(sentences)
