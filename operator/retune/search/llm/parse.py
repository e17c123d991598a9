"""Turning a model's answer into a program, or into a failure with a reason.

Real answers are messy: prose around the code, SEARCH/REPLACE blocks inside code fences,
indentation that is off by a level, a block whose SEARCH text is not in the parent, an
answer cut off at the output-token limit, a full program where a diff was asked for (or
the reverse). This module accepts what can be used and rejects the rest with a short
reason (``"<reason>: <detail>"``; the reason alone is :data:`Failure` vocabulary), so a
broken program is never handed to the evaluator: whatever is returned parses and defines
the entrypoint with the policy's arity.

Diff blocks are applied leniently: a block whose SEARCH text cannot be found is skipped as
long as another block applies, because the evaluator's quick subset rejects a broken
result far more cheaply than paying for another call.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
_FENCE_OPEN = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
_FENCE_CLOSE = re.compile(r"^\s*```\s*$")
_PYTHON_LANGS = {"", "python", "py", "python3"}
_CODE_START = re.compile(r"^(def |async def |class |import |from |@|#|[A-Za-z_]\w*\s*(:[^=]+)?=)")
_MAX_TRAILING_PROSE_LINES = 30


@dataclass(frozen=True)
class ParseOutcome:
    """A usable program (``code``) or the reason there is none (``failure``)."""

    code: str | None = None
    failure: str | None = None
    summary: str = ""

    @property
    def reason(self) -> str | None:
        """The failure's reason word, without its detail."""
        return None if self.failure is None else self.failure.split(":", 1)[0]


@dataclass
class DiffBlock:
    search: list[str]
    replace: list[str]


@dataclass
class _Fence:
    lang: str
    lines: list[str] = field(default_factory=list)
    closed: bool = False


def parse_answer(
    text: str,
    *,
    parent_code: str,
    entrypoint: str,
    signature: str = "",
    truncated: bool = False,
) -> ParseOutcome:
    """The program a model's answer describes.

    ``truncated`` says the answer hit the output-token limit (``finish_reason ==
    "length"``): then only complete diff blocks or a closed code fence are trusted, since a
    cut program can still parse while missing its end.
    """
    text = text.replace("\r\n", "\n")
    if not text.strip():
        return ParseOutcome(failure="empty: the answer has no content")
    blocks, partial = find_diff_blocks(text)
    if blocks:
        return _from_diff(blocks, partial, parent_code, entrypoint, signature)
    if partial:
        reason = "truncated" if truncated else "partial_diff"
        return ParseOutcome(failure=f"{reason}: a SEARCH/REPLACE block is not complete")
    return _from_rewrite(text, parent_code, entrypoint, signature, truncated)


# -- diffs -------------------------------------------------------------------------------
def find_diff_blocks(text: str) -> tuple[list[DiffBlock], bool]:
    """Complete SEARCH/REPLACE blocks in ``text``, and whether an unfinished one follows."""
    blocks: list[DiffBlock] = []
    search: list[str] | None = None
    replace: list[str] | None = None
    for line in text.split("\n"):
        if _SEARCH.match(line):
            search, replace = [], None
        elif search is not None and replace is None and _DIVIDER.match(line):
            replace = []
        elif replace is not None and _REPLACE.match(line):
            assert search is not None
            blocks.append(DiffBlock(_strip_fence_lines(search), _strip_fence_lines(replace)))
            search, replace = None, None
        elif replace is not None:
            replace.append(line)
        elif search is not None:
            search.append(line)
    return blocks, search is not None


def apply_block(code: str, block: DiffBlock) -> str | None:
    """``code`` with ``block`` applied at its first match, or ``None`` if it does not match.

    Tries an exact match, then one that ignores trailing whitespace, then one that allows
    the whole block to be indented by a different (consistent) amount.
    """
    if not any(line.strip() for line in block.search):
        return None
    search_text = "\n".join(block.search) + "\n"
    if search_text in code:
        return code.replace(search_text, "\n".join(block.replace) + "\n", 1)
    lines = code.split("\n")
    size = len(block.search)
    for start in range(len(lines) - size + 1):
        delta = _indent_delta(lines[start : start + size], block.search)
        if delta is not None:
            new = [_reindent(line, delta) for line in block.replace]
            return "\n".join(lines[:start] + new + lines[start + size :])
    return None


def _from_diff(
    blocks: list[DiffBlock], partial: bool, parent_code: str, entrypoint: str, signature: str
) -> ParseOutcome:
    code = parent_code if parent_code.endswith("\n") else parent_code + "\n"
    applied = 0
    for block in blocks:
        result = apply_block(code, block)
        if result is not None:
            code, applied = result, applied + 1
    if applied == 0:
        return ParseOutcome(
            failure=f"diff_not_applied: none of {len(blocks)} SEARCH blocks matches the program"
        )
    summary = f"{applied} of {len(blocks)} diff blocks applied"
    if partial:
        summary += ", an unfinished block ignored"
    return _validated(code, parent_code, entrypoint, signature, summary)


def _indent_delta(window: list[str], search: list[str]) -> int | None:
    delta: int | None = None
    for have, want in zip(window, search, strict=True):
        if have.strip() != want.strip():
            return None
        if not want.strip():
            continue
        shift = _indent(have) - _indent(want)
        if delta is None:
            delta = shift
        elif shift != delta:
            return None
    return delta


def _reindent(line: str, delta: int) -> str:
    if delta >= 0 or not line.strip():
        return " " * delta + line if line.strip() else line
    return line[min(-delta, _indent(line)) :]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _strip_fence_lines(lines: list[str]) -> list[str]:
    # A model sometimes wraps each half of a block in its own fence.
    if lines and _FENCE_OPEN.match(lines[0]):
        lines = lines[1:]
    if lines and _FENCE_CLOSE.match(lines[-1]):
        lines = lines[:-1]
    return lines


# -- full programs -----------------------------------------------------------------------
def _from_rewrite(
    text: str, parent_code: str, entrypoint: str, signature: str, truncated: bool
) -> ParseOutcome:
    fences = [f for f in _fences(text) if f.lang.lower() in _PYTHON_LANGS]
    closed = [f for f in fences if f.closed]
    if closed:
        outcomes = [
            _validated("\n".join(f.lines), parent_code, entrypoint, signature, "full program")
            for f in closed
        ]
        usable = [o for o in outcomes if o.code is not None]
        # The last usable block: models often quote the old code before the new one.
        return usable[-1] if usable else outcomes[-1]
    if fences:  # one fence left open at the end of the answer
        if truncated:
            return ParseOutcome(failure="truncated: the program was cut off at the output limit")
        summary = "full program (unclosed code block)"
        return _validated("\n".join(fences[-1].lines), parent_code, entrypoint, signature, summary)
    if truncated:
        return ParseOutcome(failure="truncated: the answer was cut off and has no code block")
    return _from_bare_text(text, parent_code, entrypoint, signature)


def _fences(text: str) -> list[_Fence]:
    fences: list[_Fence] = []
    current: _Fence | None = None
    for line in text.split("\n"):
        if current is None:
            opened = _FENCE_OPEN.match(line)
            if opened:
                current = _Fence(lang=opened.group(1))
        elif _FENCE_CLOSE.match(line):
            current.closed = True
            fences.append(current)
            current = None
        else:
            current.lines.append(line)
    if current is not None:
        fences.append(current)
    return fences


def _from_bare_text(text: str, parent_code: str, entrypoint: str, signature: str) -> ParseOutcome:
    """A program written without a fence, possibly with prose before or after it."""
    if not _defines_name(text, entrypoint):
        return ParseOutcome(failure="no_code: the answer contains no program")
    lines = text.strip("\n").split("\n")
    starts = [i for i, line in enumerate(lines) if _CODE_START.match(line)]
    for start in starts:
        body = lines[start:]
        for cut in range(min(len(body), _MAX_TRAILING_PROSE_LINES + 1)):
            candidate = "\n".join(body[: len(body) - cut])
            if _parses(candidate) and _defines_name(candidate, entrypoint):
                return _validated(candidate, parent_code, entrypoint, signature, "bare program")
    return ParseOutcome(failure="syntax: the answer's code does not parse as Python")


# -- validation --------------------------------------------------------------------------
def _validated(
    code: str, parent_code: str, entrypoint: str, signature: str, summary: str
) -> ParseOutcome:
    code = code.strip("\n") + "\n"
    failure = check_program(code, entrypoint, signature)
    if failure is not None:
        return ParseOutcome(failure=failure)
    if _same_program(code, parent_code):
        return ParseOutcome(failure="unchanged: the answer repeats the current program")
    return ParseOutcome(code=code, summary=summary)


def check_program(code: str, entrypoint: str, signature: str = "") -> str | None:
    """Why ``code`` is not a usable policy program, or ``None`` if it is."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as error:
        line = getattr(error, "lineno", None)
        where = f"line {line}: " if line else ""
        return f"syntax: {where}{getattr(error, 'msg', str(error))}"
    function = next(
        (
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name == entrypoint
        ),
        None,
    )
    if function is None:
        return f"missing_entrypoint: no top-level function `{entrypoint}`"
    expected = _expected_arity(signature, entrypoint)
    if expected is not None and not _accepts(function.args, expected):
        return f"signature: `{entrypoint}` must take {expected} positional arguments"
    return None


def _expected_arity(signature: str, entrypoint: str) -> int | None:
    text = signature.strip().removeprefix("def ").strip().rstrip(":").strip()
    if text.startswith("("):
        text = entrypoint + text
    try:
        tree = ast.parse(f"def {text}:\n    pass\n")
    except SyntaxError:
        return None  # a free-form signature: nothing to check against
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef)
    return len(node.args.posonlyargs) + len(node.args.args)


def _accepts(args: ast.arguments, count: int) -> bool:
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    return required <= count and (count <= positional or args.vararg is not None)


def _same_program(code: str, parent_code: str) -> bool:
    try:
        return ast.dump(ast.parse(code)) == ast.dump(ast.parse(parent_code))
    except SyntaxError:
        return False


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _defines_name(text: str, name: str) -> bool:
    return re.search(rf"\bdef\s+{re.escape(name)}\s*\(", text) is not None
