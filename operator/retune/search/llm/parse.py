"""Turning a model's answer into a program, or into a failure with a reason.

Real answers are messy: prose around the code, SEARCH/REPLACE blocks inside code fences,
indentation that is off by a level, a block whose SEARCH text is not in the parent, an
answer cut off at the output-token limit, a full program where a diff was asked for (or
the reverse). This module accepts what can be used and rejects the rest with a short
reason (``"<reason>: <detail>"``; the reason alone is :data:`Failure` vocabulary), so a
broken program is never handed to the evaluator: whatever is returned parses, defines
the entrypoint with the policy's arity, passes the sandbox's allowlist and defines every
name it uses (``amend``: what can be mended safely is, such as an unused refused import or
an answer holding only the changed function). A failure's detail is exact (the SEARCH text
that matched nothing, the refused name and line), since a repair round quotes it back.

Diff blocks are applied leniently: a block whose SEARCH text cannot be found is skipped as
long as another block applies, because the evaluator's quick subset rejects a broken
result far more cheaply than paying for another call.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from retune.evaluate import syntax
from retune.search.llm.amend import drop_unused_foreign_imports, merge_fragment, refusal

_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
_FENCE_OPEN = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
_FENCE_CLOSE = re.compile(r"^\s*```\s*$")
_PYTHON_LANGS = {"", "python", "py", "python3"}
_CODE_START = re.compile(r"^(def |async def |class |import |from |@|#|[A-Za-z_]\w*\s*(:[^=]+)?=)")
_MAX_TRAILING_PROSE_LINES = 30
_MAX_QUOTED_LINES = 12


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
    the whole block to be indented by a different (consistent) amount, then one that
    ignores blank lines, tabs and any drift of indentation or spacing inside lines (the
    replacement is then re-indented to the program's own indentation).
    """
    if not any(line.strip() for line in block.search):
        return None
    if "\t" not in code:  # a model that indents with tabs, in a program that does not
        block = DiffBlock(_untab(block.search), _untab(block.replace))
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
    return _apply_fuzzy(lines, block)


def _apply_fuzzy(lines: list[str], block: DiffBlock) -> str | None:
    """The block applied where its non-blank lines match the program's with all spacing
    ignored; ``None`` unless exactly one place matches."""
    wanted = [_squash(line) for line in block.search if line.strip()]
    code_rows = [i for i, line in enumerate(lines) if line.strip()]
    squashed = [_squash(lines[i]) for i in code_rows]
    matches = [
        at
        for at in range(len(code_rows) - len(wanted) + 1)
        if squashed[at : at + len(wanted)] == wanted
    ]
    if len(matches) != 1:
        return None
    rows = code_rows[matches[0] : matches[0] + len(wanted)]
    search_indents = [_width(line) for line in block.search if line.strip()]
    levels = dict(zip(search_indents, (_width(lines[i]) for i in rows), strict=True))
    new = [_map_indent(line, levels) for line in block.replace]
    return "\n".join(lines[: rows[0]] + new + lines[rows[-1] + 1 :])


def _untab(lines: list[str]) -> list[str]:
    return [line.expandtabs(4) if line.startswith("\t") else line for line in lines]


def _squash(line: str) -> str:
    return "".join(line.split())


def _width(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))


def _map_indent(line: str, levels: dict[int, int]) -> str:
    """``line`` re-indented from the block's indentation to the program's: widths seen in
    the match map as matched; others step from the nearest one below, one program
    indentation unit per unit of the block's own."""
    if not line.strip():
        return ""
    width = _width(line)
    if width in levels:
        target = levels[width]
    else:
        base = max([w for w in levels if w < width] or [min(levels)])
        steps = round((width - base) / _unit(levels.keys()))
        target = max(0, levels[base] + steps * _unit(levels.values()))
    return " " * target + line.strip()


def _unit(widths: Iterable[int]) -> int:
    """The indentation step of a set of widths (four spaces if they do not show one)."""
    known = sorted({0, *widths})
    return min((b - a for a, b in itertools.pairwise(known) if b > a), default=4)


def _from_diff(
    blocks: list[DiffBlock], partial: bool, parent_code: str, entrypoint: str, signature: str
) -> ParseOutcome:
    code = parent_code if parent_code.endswith("\n") else parent_code + "\n"
    applied = 0
    unmatched: list[DiffBlock] = []
    for block in blocks:
        result = apply_block(code, block)
        if result is not None:
            code, applied = result, applied + 1
        else:
            unmatched.append(block)
    if applied == 0:
        return ParseOutcome(
            failure=f"diff_not_applied: {_unmatched_detail(unmatched, len(blocks))}"
        )
    summary = f"{applied} of {len(blocks)} diff blocks applied"
    if partial:
        summary += ", an unfinished block ignored"
    return _validated(code, parent_code, entrypoint, signature, summary, fragment=False)


def _unmatched_detail(unmatched: list[DiffBlock], total: int) -> str:
    """Which SEARCH text matched nothing, quoted, for the model to correct."""
    first = [line for line in unmatched[0].search if line.strip()][:_MAX_QUOTED_LINES]
    quoted = "\n".join(first)
    more = f" (and {len(unmatched) - 1} more)" if len(unmatched) > 1 else ""
    return (
        f"none of {total} SEARCH blocks matches the program to change; this SEARCH text is "
        f"not in it{more}:\n{quoted}"
    )


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
    code: str,
    parent_code: str,
    entrypoint: str,
    signature: str,
    summary: str,
    *,
    fragment: bool = True,
) -> ParseOutcome:
    """``code`` as a usable program; ``fragment``: it may be a piece of the parent (an
    answer's code block), not a whole program (a diff applied to the parent)."""
    code = drop_unused_foreign_imports(code.strip("\n") + "\n")
    merged = merge_fragment(code, parent_code, entrypoint) if fragment else None
    if merged is not None:
        code, summary = merged, summary + " (merged into the program)"
    failure = check_program(code, entrypoint, signature) or refusal(code, entrypoint)
    if failure is not None:
        return ParseOutcome(failure=failure)
    if _same_program(code, parent_code):
        return ParseOutcome(failure="unchanged: the answer repeats the current program")
    return ParseOutcome(code=code, summary=summary)


def check_program(code: str, entrypoint: str, signature: str = "") -> str | None:
    """Why ``code`` is not a usable policy program, or ``None`` if it is."""
    try:
        tree = syntax.parse(code)
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
        tree = syntax.parse(f"def {text}:\n    pass\n")
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
        return ast.dump(syntax.parse(code)) == ast.dump(syntax.parse(parent_code))
    except SyntaxError:
        return False


def _parses(code: str) -> bool:
    try:
        syntax.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _defines_name(text: str, name: str) -> bool:
    return re.search(rf"\bdef\s+{re.escape(name)}\s*\(", text) is not None
