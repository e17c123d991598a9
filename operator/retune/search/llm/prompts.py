"""Prompts for the LLM mutator.

One system message (the rules) and one user message (the task). The user message is built
from named sections so the answer format is unambiguous and a stand-in server can find the
parent program: the parent always sits in the first ```python fence after
:data:`PARENT_HEADING`.

* ``MUTATE`` asks for SEARCH/REPLACE blocks against the parent: small, cheap answers.
* ``PARADIGM`` and ``INIT`` ask for a whole new program in one ```python fence.
"""

from __future__ import annotations

from dataclasses import dataclass

from retune.search.mutation import Inspiration, MutationKind, MutationRequest

PARENT_HEADING = "## Current program"
DIFF_FORMAT_MARKER = "SEARCH/REPLACE"
MAX_INSPIRATIONS = 2
MAX_FEEDBACK_CHARS = 2_000
MAX_INSPIRATION_CHARS = 4_000


@dataclass(frozen=True)
class PolicyBrief:
    """What the model is told about the policy it edits (from ``retune.spec.PolicySpec``)."""

    entrypoint: str
    signature: str
    description: str
    kind: str


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str

    def messages(self) -> list[dict[str, str]]:
        """The chat messages, in the OpenAI wire format."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user},
        ]

    def texts(self) -> list[str]:
        return [self.system, self.user]


def build_prompt(request: MutationRequest, policy: PolicyBrief) -> Prompt:
    """The prompt for one planned mutation; a pure function of its arguments."""
    return Prompt(system=_system(policy), user=_user(request, policy))


def _system(policy: PolicyBrief) -> str:
    return (
        f"You improve a {policy.kind or 'heuristic'} policy: a small, self-contained Python "
        "program that a production workload loads and calls. Candidates are scored by an "
        "evaluator on the deployment's own workload; higher is better.\n"
        "Rules for every program you write:\n"
        f"- It must define `{policy.entrypoint}` with exactly this signature: "
        f"`{policy.signature}`.\n"
        "- Pure computation only: the standard library's `math`, `heapq`, `collections` "
        "and `itertools` at most; no files, network, processes, `exec`/`eval`, dunder "
        "attributes or introspection. Such programs are rejected before they run.\n"
        "- It must be fast: it runs on the workload's hot path.\n"
        "Think briefly, then answer in the format the task asks for."
    )


def _user(request: MutationRequest, policy: PolicyBrief) -> str:
    parts = []
    if policy.description.strip():
        parts.append("## Problem\n" + policy.description.strip())
    parts.append(_parent_section(request))
    for index, inspiration in enumerate(request.inspirations[:MAX_INSPIRATIONS], start=1):
        parts.append(_inspiration_section(index, inspiration))
    parts.append(_task_section(request.kind, policy))
    return "\n\n".join(parts) + "\n"


def _parent_section(request: MutationRequest) -> str:
    lines = [PARENT_HEADING]
    if request.parent_score is not None:
        lines.append(f"Score: {request.parent_score:.6g}" + _subscores(request.parent_subscores))
    lines.append(_fence(request.parent_code))
    feedback = request.parent_feedback.strip()
    if feedback:
        if len(feedback) > MAX_FEEDBACK_CHARS:
            feedback = feedback[:MAX_FEEDBACK_CHARS] + "\n[... feedback truncated]"
        lines.append("Evaluator feedback on this program:\n" + feedback)
    return "\n".join(lines)


def _inspiration_section(index: int, inspiration: Inspiration) -> str:
    code = inspiration.code
    if len(code) > MAX_INSPIRATION_CHARS:
        code = code[:MAX_INSPIRATION_CHARS] + "\n# [... truncated]"
    return "\n".join(
        [
            f"## Another approach ({index}), from a different region of the archive",
            f"Score: {inspiration.score:.6g}" + _subscores(inspiration.subscores),
            _fence(code),
        ]
    )


def _task_section(kind: MutationKind, policy: PolicyBrief) -> str:
    if kind is MutationKind.MUTATE:
        return (
            "## Task\n"
            "Propose one focused improvement to the current program, guided by the "
            "feedback and the per-subset scores. Answer with one or more "
            f"{DIFF_FORMAT_MARKER} blocks, each exactly in this form:\n"
            "<<<<<<< SEARCH\n"
            "lines copied exactly from the current program\n"
            "=======\n"
            "the lines that replace them\n"
            ">>>>>>> REPLACE\n"
            "The SEARCH part must match the current program character for character, "
            "indentation included. Do not rewrite the whole program."
        )
    if kind is MutationKind.PARADIGM:
        goal = (
            "The search has stalled around the current program. Write a fundamentally "
            "different approach (a different idea, not a retuned constant), borrowing from "
            "the other approaches where they do better."
        )
    else:
        goal = (
            "Write a new starting point for the search: a program whose structure and idea "
            "differ clearly from the current program, still a sensible policy."
        )
    return (
        "## Task\n"
        f"{goal}\n"
        "Answer with the complete program in a single ```python code block. It must "
        f"define `{policy.entrypoint}` with the signature `{policy.signature}`."
    )


def _subscores(subscores: dict[str, float]) -> str:
    if not subscores:
        return ""
    shown = ", ".join(f"{name}={value:.4g}" for name, value in sorted(subscores.items()))
    return f" (per subset: {shown})"


def _fence(code: str) -> str:
    return "```python\n" + code.rstrip("\n") + "\n```"
