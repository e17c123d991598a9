"""Free mutations in an LLM search: once it refines, a share of its ordinary mutations is
answered without a call, half by the optimiser and half by the built-in mutator's edits;
nothing else changes."""

from __future__ import annotations

from retune.search.builtin import BuiltinMutator, FreeMutations
from retune.search.constants import Trial, constant_values, skeleton_hash
from retune.search.mutation import (
    DuplicateCheck,
    MutationKind,
    MutationRequest,
    MutationResult,
    SearchPhase,
)
from tests.test_engine import SEED


class Models:
    """Stands for the LLM tiers: answers every request it gets, and counts them."""

    concurrency = 3

    def __init__(self) -> None:
        self.asked: list[int] = []

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        self.asked.append(request.seed)
        return MutationResult(code=SEED.replace("z > 3", "z > 4"), model="small")


def request(seed: int, phase: SearchPhase, kind: MutationKind) -> MutationRequest:
    values = constant_values(SEED) or []
    relatives = [
        Trial(values=values, score=1.0),
        Trial(values=[v * 1.5 for v in values], score=1.2),
    ]
    return MutationRequest(parent_code=SEED, seed=seed, phase=phase, kind=kind, relatives=relatives)


SHARE = 0.6


def free(models: Models) -> FreeMutations:
    return FreeMutations(models, SHARE, edits=BuiltinMutator("f"))


def answers(phase: SearchPhase, kind: MutationKind) -> tuple[Models, list[MutationResult]]:
    models = Models()
    mutator = free(models)
    assert mutator.concurrency == models.concurrency
    results = [mutator.mutate(request(s, phase, kind), lambda code: False) for s in range(200)]
    return models, results


def test_a_share_of_refining_ordinary_mutations_is_answered_without_a_call() -> None:
    models, results = answers(SearchPhase.REFINE, MutationKind.MUTATE)
    unpaid = [r for r in results if r.model is None]
    assert len(unpaid) + len(models.asked) == len(results)
    assert abs(len(unpaid) / len(results) - SHARE) < 0.1
    # half of them tuned (only the numbers move), half edited (the structure may move too)
    tuned = [r for r in unpaid if r.code and skeleton_hash(r.code) == skeleton_hash(SEED)]
    edited = [r for r in unpaid if r not in tuned]
    assert all(r.code is not None and r.code != SEED for r in unpaid)
    assert len(tuned) >= 0.3 * len(results) * 0.6
    assert len(edited) >= 0.1 * len(results), "the built-in mutator answers a share too"
    again = free(Models()).mutate(
        request(7, SearchPhase.REFINE, MutationKind.MUTATE), lambda c: False
    )
    assert again == results[7], "the request alone decides the answer"


def test_without_edits_the_whole_share_is_tuned_and_a_zero_share_pays_for_everything() -> None:
    models = Models()
    tuning_only = FreeMutations(models, 0.3)
    results = [
        tuning_only.mutate(request(s, SearchPhase.REFINE, MutationKind.MUTATE), lambda c: False)
        for s in range(200)
    ]
    tuned = [r for r in results if r.model is None]
    assert abs(len(tuned) / len(results) - 0.3) < 0.1
    assert all(r.code and skeleton_hash(r.code) == skeleton_hash(SEED) for r in tuned)
    none = FreeMutations(Models(), 0.0, edits=BuiltinMutator("f"))
    assert all(
        none.mutate(request(s, SearchPhase.REFINE, MutationKind.MUTATE), lambda c: False).model
        == "small"
        for s in range(50)
    )


def test_before_refining_and_for_rewrites_every_request_goes_to_the_models() -> None:
    for phase, kind in [
        (SearchPhase.EXPLORE, MutationKind.MUTATE),
        (SearchPhase.REFINE, MutationKind.PARADIGM),
        (SearchPhase.REFINE, MutationKind.INIT),
    ]:
        models, results = answers(phase, kind)
        assert len(models.asked) == len(results)
        assert all(r.model == "small" for r in results)


def test_a_known_tuned_program_is_not_proposed_again() -> None:
    models = Models()
    mutator = free(models)
    for seed in range(60):
        result = mutator.mutate(
            request(seed, SearchPhase.REFINE, MutationKind.MUTATE), lambda c: True
        )
        assert result.model == "small", "every free proposal was a duplicate: ask the models"
    assert len(models.asked) == 60
