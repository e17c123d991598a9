"""Prompts for the LLM mutator.

One system message (the rules) and one user message (the task); a repair round adds the
model's answer and one follow-up. The layout leaves a model nothing to misread:

* The program to change is the only code block in the prompt. It sits directly under
  :data:`PARENT_HEADING` (which names it, ``policy.py``), before anything else a model
  could take for it, and the task says that SEARCH blocks are matched against it alone.
* Other programs from the archive (inspirations) come after the task, under a heading
  that says they are read-only, as ``|``-prefixed listings rather than code blocks: a
  model that edits "the first" or "the longest" code block still edits the right one, and
  lines copied from a listing cannot be mistaken for lines of the program.
* The rules in the system message (the modules and builtins a policy may use) are
  generated from the sandbox's allowlist (``retune.evaluate.allowlist``), so the prompt
  never offers what the allowlist refuses.

``MUTATE`` asks for SEARCH/REPLACE blocks against the program; ``PARADIGM`` and ``INIT``
ask for a whole new program in one ```python fence.
"""

from __future__ import annotations

from dataclasses import dataclass

from retune.evaluate.allowlist import ALLOWED_MODULES, SAFE_BUILTIN_NAMES, SAFE_EXCEPTION_NAMES
from retune.search.mutation import Inspiration, MutationKind, MutationRequest
from retune.spec import ParameterSpec

PROGRAM_NAME = "policy.py"
PARENT_HEADING = f"## Program to change: `{PROGRAM_NAME}`"
CONTEXT_HEADING = "## Read-only context: other programs from the archive"
LISTING_PREFIX = "| "
DIFF_FORMAT_MARKER = "SEARCH/REPLACE"
REPAIR_HEADING = "## Your answer could not be used"
MAX_INSPIRATIONS = 2
MAX_FEEDBACK_CHARS = 2_000
MAX_INSPIRATION_CHARS = 4_000
MAX_ANSWER_ECHO_CHARS = 6_000


@dataclass(frozen=True)
class PolicyBrief:
    """What the model is told about the policy it edits (from ``retune.spec.PolicySpec``)."""

    entrypoint: str
    signature: str
    description: str
    kind: str
    # A parameters policy's parameters: an answer may move their values and nothing else.
    parameters: tuple[ParameterSpec, ...] = ()


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    history: tuple[tuple[str, str], ...] = ()  # (role, content) after the first user message

    def messages(self) -> list[dict[str, str]]:
        """The chat messages, in the OpenAI wire format."""
        first = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user},
        ]
        return first + [{"role": role, "content": text} for role, text in self.history]

    def texts(self) -> list[str]:
        return [self.system, self.user, *(text for _, text in self.history)]


def build_prompt(request: MutationRequest, policy: PolicyBrief) -> Prompt:
    """The prompt for one planned mutation; a pure function of its arguments."""
    return Prompt(system=system_rules(policy), user=_user(request, policy))


def repair_prompt(
    prompt: Prompt,
    answer: str,
    problem: str,
    kind: MutationKind,
    *,
    cut_off: bool = False,
) -> Prompt:
    """``prompt`` followed by the model's ``answer`` and one follow-up that names the exact
    ``problem`` and asks for a corrected answer in the same format.

    ``cut_off`` (the answer ran into its output limit) makes the follow-up short and
    cheap: the answer's prose is left out of the echo (only the code it had begun is
    quoted), and an edit is asked for as SEARCH/REPLACE blocks only, with no explanation --
    the answer that ran out of tokens must not be paid for twice in the repair's prompt.
    """
    if cut_off:
        answer = _code_part(answer)
    if len(answer) > MAX_ANSWER_ECHO_CHARS:
        answer = answer[:MAX_ANSWER_ECHO_CHARS] + "\n[... answer cut here]"
    if kind is MutationKind.MUTATE and cut_off:
        again = (
            f"Answer again with {DIFF_FORMAT_MARKER} blocks only, against `{PROGRAM_NAME}` "
            "(copy SEARCH lines from it exactly), and nothing else: no reasoning before the "
            "blocks, no explanation after them."
        )
    elif kind is MutationKind.MUTATE:
        again = (
            f"Answer again with {DIFF_FORMAT_MARKER} blocks against `{PROGRAM_NAME}` (the "
            "program under the heading 'Program to change'; copy SEARCH lines from it "
            "exactly), or with the complete corrected program in one ```python block."
            " Keep any explanation to one or two sentences."
        )
    else:
        again = "Answer again with the complete corrected program in one ```python block." + (
            " No reasoning before it, no explanation after it."
            if cut_off
            else " Keep any explanation to one or two sentences."
        )
    follow_up = f"{REPAIR_HEADING}\n{problem.strip()}\n\n{again}"
    history = (*prompt.history, ("assistant", answer), ("user", follow_up))
    return Prompt(system=prompt.system, user=prompt.user, history=history)


def _code_part(answer: str) -> str:
    """What a cut-off answer holds from its first code fence or SEARCH marker on; a note
    in place of an answer that was all prose."""
    lines = answer.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(("```", "<<<<<<<")):
            return "[... reasoning left out]\n" + "\n".join(lines[i:])
    return f"[{len(answer)} characters of reasoning, cut off before any code]"


def system_rules(policy: PolicyBrief) -> str:
    """The system message: what a program must be, from the allowlist's own lists."""
    modules = ", ".join(f"`{name}`" for name in sorted(ALLOWED_MODULES))
    builtins = ", ".join(sorted(SAFE_BUILTIN_NAMES))
    exceptions = ", ".join(sorted(SAFE_EXCEPTION_NAMES))
    return (
        f"You improve a {policy.kind or 'heuristic'} policy: a small, self-contained Python "
        "program that a production workload loads and calls. Candidates are scored by an "
        "evaluator on the deployment's own workload; higher is better.\n"
        "Rules for every program you write (a program that breaks one is refused before "
        "it runs):\n"
        f"- It must define `{policy.entrypoint}` with exactly this signature: "
        f"`{policy.signature}`.\n"
        f"- Imports: only {modules}, at the top of the program. No other module is "
        "available, the standard library's included.\n"
        f"- Builtins: only {builtins}. Exceptions: only {exceptions}.\n"
        "- Define every helper function you call in the program itself.\n"
        "- Pure computation: no classes, `global`, `with`, `yield`, decorators, "
        "`str.format`, files, network, processes, `exec`/`eval`, or names and attributes "
        "starting with `_`. Module level holds only imports, functions and constants.\n"
        "- It must be fast: it runs on the workload's hot path.\n"
        "Think briefly, then answer in the format the task asks for."
    )


def _user(request: MutationRequest, policy: PolicyBrief) -> str:
    parts = []
    if policy.description.strip():
        parts.append("## Problem\n" + policy.description.strip())
    parts.append(_parent_section(request))
    parts.append(_task_section(request.kind, policy))
    inspirations = request.inspirations[:MAX_INSPIRATIONS]
    if inspirations:
        parts.append(_context_section(inspirations))
    return "\n\n".join(parts) + "\n"


def _parent_section(request: MutationRequest) -> str:
    lines = [PARENT_HEADING, _fence(request.parent_code)]
    if request.parent_score is not None:
        lines.append(
            f"Score of `{PROGRAM_NAME}`: {request.parent_score:.6g}"
            + _subscores(request.parent_subscores)
        )
    feedback = request.parent_feedback.strip()
    if feedback:
        if len(feedback) > MAX_FEEDBACK_CHARS:
            feedback = feedback[:MAX_FEEDBACK_CHARS] + "\n[... feedback truncated]"
        lines.append(f"Evaluator feedback on `{PROGRAM_NAME}`:\n" + feedback)
    return "\n".join(lines)


def _context_section(inspirations: list[Inspiration]) -> str:
    parts = [
        f"{CONTEXT_HEADING}\n"
        f"For ideas only. These are NOT the program to change: do not edit them and never "
        f"copy their lines into SEARCH blocks. Each line is prefixed with "
        f"'{LISTING_PREFIX.strip()}'."
    ]
    for index, inspiration in enumerate(inspirations):
        code = inspiration.code
        if len(code) > MAX_INSPIRATION_CHARS:
            code = code[:MAX_INSPIRATION_CHARS] + "\n# [... truncated]"
        listing = "\n".join(LISTING_PREFIX + line for line in code.rstrip("\n").split("\n"))
        label = chr(ord("A") + index)
        header = f"### Reference {label} (read-only), score {inspiration.score:.6g}"
        parts.append(header + _subscores(inspiration.subscores) + "\n" + listing)
    return "\n\n".join(parts)


def _task_section(kind: MutationKind, policy: PolicyBrief) -> str:
    if policy.parameters:
        return _parameters_task(kind, policy.parameters)
    if kind is MutationKind.MUTATE:
        return (
            "## Task\n"
            f"Propose one focused improvement to `{PROGRAM_NAME}`, guided by its feedback "
            "and subscores. Answer with one or more "
            f"{DIFF_FORMAT_MARKER} blocks, each exactly in this form:\n"
            "<<<<<<< SEARCH\n"
            f"lines copied exactly from {PROGRAM_NAME}\n"
            "=======\n"
            "the lines that replace them\n"
            ">>>>>>> REPLACE\n"
            f"SEARCH blocks are matched against `{PROGRAM_NAME}` alone, character for "
            "character, indentation included. Do not rewrite the whole program."
        )
    if kind is MutationKind.PARADIGM:
        goal = (
            f"The search has stalled around `{PROGRAM_NAME}`. Write a fundamentally "
            "different approach (a different idea, not a retuned constant), borrowing from "
            "the read-only reference programs below where they do better."
        )
    else:
        goal = (
            "Write a new starting point for the search: a program whose structure and idea "
            f"differ clearly from `{PROGRAM_NAME}`, still a sensible policy."
        )
    return (
        "## Task\n"
        f"{goal}\n"
        "Answer with the complete program in a single ```python code block. It must "
        f"define `{policy.entrypoint}` with the signature `{policy.signature}`."
    )


def _parameters_task(kind: MutationKind, parameters: tuple[ParameterSpec, ...]) -> str:
    """The task for a parameters policy: move values, whatever the kind of mutation."""
    listed = "\n".join(
        f"- `{p.name}`: {'a whole number ' if p.integer else ''}from {p.min:g} to {p.max:g}"
        + (f", in steps of {p.step:g}" if p.step is not None else "")
        for p in parameters
    )
    goal = (
        f"Propose better values for the parameters of `{PROGRAM_NAME}`, guided by its "
        "feedback and subscores."
        if kind is MutationKind.MUTATE
        else f"Propose a clearly different setting of the parameters of `{PROGRAM_NAME}` "
        "(move several of them far), to explore another region."
    )
    return (
        "## Task\n"
        f"{goal} Only these values may change, each within its range:\n{listed}\n"
        "Every other line must stay exactly as it is. Answer with one "
        f"{DIFF_FORMAT_MARKER} block per changed assignment, exactly in this form:\n"
        "<<<<<<< SEARCH\n"
        f"the assignment line copied exactly from {PROGRAM_NAME}\n"
        "=======\n"
        "the same assignment with the new value\n"
        ">>>>>>> REPLACE"
    )


def _subscores(subscores: dict[str, float]) -> str:
    if not subscores:
        return ""
    shown = ", ".join(f"{name}={value:.4g}" for name, value in sorted(subscores.items()))
    return f" (subscores: {shown})"


def _fence(code: str) -> str:
    return "```python\n" + code.rstrip("\n") + "\n```"
