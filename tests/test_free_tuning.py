"""Free constant tuning in an LLM search: once it refines, a share of its ordinary
mutations is answered by the optimiser without a call; nothing else changes."""

from __future__ import annotations

from retune.search.builtin import TUNE_SHARE, FreeTuning
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


def answers(phase: SearchPhase, kind: MutationKind) -> tuple[Models, list[MutationResult]]:
    models = Models()
    mutator = FreeTuning(models)
    assert mutator.concurrency == models.concurrency
    results = [mutator.mutate(request(s, phase, kind), lambda code: False) for s in range(200)]
    return models, results


def test_a_share_of_refining_ordinary_mutations_is_tuned_without_a_call() -> None:
    models, results = answers(SearchPhase.REFINE, MutationKind.MUTATE)
    tuned = [r for r in results if r.model is None]
    assert len(tuned) + len(models.asked) == len(results)
    assert abs(len(tuned) / len(results) - TUNE_SHARE) < 0.1
    for result in tuned:
        assert result.code is not None and result.code != SEED
        assert skeleton_hash(result.code) == skeleton_hash(SEED), "only the numbers move"
    again = FreeTuning(Models()).mutate(
        request(7, SearchPhase.REFINE, MutationKind.MUTATE), lambda c: False
    )
    assert again == results[7], "the request alone decides the answer"


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
    mutator = FreeTuning(models)
    for seed in range(60):
        result = mutator.mutate(
            request(seed, SearchPhase.REFINE, MutationKind.MUTATE), lambda c: True
        )
        assert result.model == "small", "every tuned proposal was a duplicate: ask the models"
    assert len(models.asked) == 60
