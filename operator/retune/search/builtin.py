"""The built-in mutator: AST-level edits, no LLM needed.

Edits: perturb a constant, swap an arithmetic operator, change a comparison, insert a
term built from the values the program already computes with, remove a term, wrap an
expression in ``min``/``max``, turn a return into a conditional (``search/edits.py``).
Parameter-only policies (a module of ``NAME = number`` assignments) get bounded parameter
moves instead.

Once a search refines (past its first ``search.explore`` evaluations, see
``MutationRequest.phase``), three more kinds draw on what the search knows: constant
tuning (``search/tuning.py``) sets all the numbers of the parent at once from the scores
of the programs sharing its structure, crossover (``search/crossover.py``) grafts a term
of another elite (an inspiration) into the parent, and a conditional-bonus edit joins
the others. Until then a request is answered exactly as if they did not exist: the same
random draws, so the same program.
Every choice comes from a ``random.Random`` seeded by the request, so the same request
always gives the same program.

:class:`FreeMutations` lends an LLM search both: once it refines, a share of its
ordinary mutations (``spec.search.freeShare``) is answered at no cost, half by the
optimiser and half by this mutator's edits, and the models are asked for the rest.
"""

from __future__ import annotations

import ast
import copy
import random
from dataclasses import dataclass

from retune.evaluate import syntax
from retune.evaluate.parameters import number_literal
from retune.search.crossover import graft_term
from retune.search.edits import EDITS, REFINE_EDITS, find_function, finish
from retune.search.mutation import (
    DuplicateCheck,
    MutationKind,
    MutationRequest,
    MutationResult,
    Mutator,
    SearchPhase,
)
from retune.search.tuning import tune_constants
from retune.spec.search import FREE_SHARE_DEFAULT

_MAX_ATTEMPTS = 24
# Shares of ordinary mutations, once a search refines, that tune the parent's constants
# and that graft a term of an inspiration; the rest are edits.
TUNE_SHARE = 0.3
CROSSOVER_SHARE = 0.15


@dataclass(frozen=True)
class ParameterBounds:
    name: str
    low: float
    high: float
    integer: bool = False
    step: float | None = None


class BuiltinMutator:
    """Mutates Python policies by editing their syntax tree."""

    def __init__(self, entrypoint: str, parameters: list[ParameterBounds] | None = None) -> None:
        self.entrypoint = entrypoint
        self.parameters = parameters or []

    @property
    def concurrency(self) -> int:
        return 1

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        rng = random.Random(request.seed)
        try:
            tree = syntax.parse(request.parent_code)
        except SyntaxError as exc:
            return MutationResult(failure=f"parent does not parse: {exc.msg}")
        edits = {
            MutationKind.MUTATE: (1, 2),
            MutationKind.PARADIGM: (3, 6),
            MutationKind.INIT: (2, 5),
        }
        low, high = edits[request.kind]
        refining = request.phase is SearchPhase.REFINE
        if refining and request.kind is MutationKind.MUTATE and not self.parameters:
            drawn = self._tune_or_cross(tree, request, rng, is_duplicate)
            if drawn is not None:
                return drawn
        for _ in range(_MAX_ATTEMPTS):
            if self.parameters:
                code, described = self._move_parameters(tree, rng, request.kind)
            else:
                code, described = self._edit(tree, rng, rng.randint(low, high), refining)
            if code is not None and not is_duplicate(code):
                return MutationResult(code=code, description="; ".join(described))
        return MutationResult(failure="no new program found after repeated edits")

    # -- code policies -----------------------------------------------------------------
    def _tune_or_cross(
        self,
        tree: ast.Module,
        request: MutationRequest,
        rng: random.Random,
        is_duplicate: DuplicateCheck,
    ) -> MutationResult | None:
        """A child by constant tuning or crossover, for the share of requests drawn for
        them; None leaves the request to the edits (also when the drawn kind finds no
        new program)."""
        draw = rng.random()
        proposal: tuple[str, str] | None = None
        if draw < TUNE_SHARE:
            proposal = tune_constants(
                tree, request.relatives, rng.getrandbits(32), lambda c: not is_duplicate(c)
            )
        elif draw < TUNE_SHARE + CROSSOVER_SHARE and request.inspirations:
            proposal = graft_term(tree, self.entrypoint, request.inspirations, rng)
            if proposal is not None and is_duplicate(proposal[0]):
                proposal = None
        if proposal is None:
            return None
        return MutationResult(code=proposal[0], description=proposal[1])

    def _edit(
        self, tree: ast.Module, rng: random.Random, count: int, refining: bool
    ) -> tuple[str | None, list[str]]:
        child = copy.deepcopy(tree)
        function = find_function(child, self.entrypoint)
        if function is None:
            return None, []
        described = []
        for _ in range(count):
            operator = rng.choice(REFINE_EDITS if refining else EDITS)
            note = operator(function, rng)
            if note:
                described.append(note)
        code = finish(child) if described else None
        return (code, described) if code is not None else (None, [])

    # -- parameter policies ------------------------------------------------------------
    def _move_parameters(
        self, tree: ast.Module, rng: random.Random, kind: MutationKind
    ) -> tuple[str | None, list[str]]:
        child = copy.deepcopy(tree)
        assignments = {
            node.targets[0].id: node
            for node in child.body
            if isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        }
        movable = [p for p in self.parameters if p.name in assignments]
        if not movable:
            return None, []
        moves = 1 if kind is MutationKind.MUTATE else max(2, len(movable) // 2)
        described = []
        for bounds in rng.sample(movable, min(moves, len(movable))):
            node = assignments[bounds.name]
            current = number_literal(node.value)  # a negative value is -(literal)
            if current is None:
                current = (bounds.low + bounds.high) / 2
            scale = 1.0 if kind is MutationKind.MUTATE else 3.0
            step = bounds.step or (bounds.high - bounds.low) / 10
            value = float(current) + rng.gauss(0.0, step * scale)
            value = min(bounds.high, max(bounds.low, value))
            if bounds.step:  # kept on the grid low + k * step
                value = min(bounds.high, bounds.low + round((value - bounds.low) / step) * step)
            new: float | int = round(value) if bounds.integer else round(value, 6)
            node.value = ast.Constant(value=new)
            described.append(f"{bounds.name}: {current} -> {new}")
        return ast.unparse(ast.fix_missing_locations(child)) + "\n", described


class FreeMutations:
    """Another mutator (the LLM tiers), with a share of its refining ordinary mutations
    answered without a call: half by constant tuning, half by the built-in mutator's
    edits (``spec.search.freeShare``). No tokens, no USD. Rewrites and paradigm shifts,
    and every request before the search refines, go to the other mutator unchanged."""

    # Keeps this draw apart from the other mutator's use of the request's seed.
    _SALT = 0x7E57

    def __init__(
        self, models: Mutator, share: float = FREE_SHARE_DEFAULT, edits: Mutator | None = None
    ) -> None:
        self.models = models
        self.edits = edits
        self.tune_share = share / 2 if edits is not None else share
        self.edit_share = share / 2 if edits is not None else 0.0

    @property
    def concurrency(self) -> int:
        return self.models.concurrency

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        free = self._free(request, is_duplicate)
        return free if free is not None else self.models.mutate(request, is_duplicate)

    def _free(
        self, request: MutationRequest, is_duplicate: DuplicateCheck
    ) -> MutationResult | None:
        """The free answer drawn for ``request``, or None (not drawn, or nothing new)."""
        if request.phase is not SearchPhase.REFINE or request.kind is not MutationKind.MUTATE:
            return None
        rng = random.Random(request.seed ^ self._SALT)
        draw = rng.random()
        if draw < self.tune_share:
            return self._tuned(request, rng, is_duplicate)
        if self.edits is not None and draw < self.tune_share + self.edit_share:
            edited = self.edits.mutate(request, is_duplicate)
            return edited if edited.ok else None
        return None

    @staticmethod
    def _tuned(
        request: MutationRequest, rng: random.Random, is_duplicate: DuplicateCheck
    ) -> MutationResult | None:
        try:
            tree = syntax.parse(request.parent_code)
        except SyntaxError:
            return None
        proposal = tune_constants(
            tree, request.relatives, rng.getrandbits(32), lambda c: not is_duplicate(c)
        )
        if proposal is None:
            return None
        return MutationResult(code=proposal[0], description=proposal[1])
