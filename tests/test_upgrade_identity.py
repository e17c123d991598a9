"""An operator upgrade is not a spec change.

A target's search digest decides whether a spec change needs a new search, and whether a
context library's winners still apply; a search's configuration fingerprint decides
whether its checkpoint may be resumed. Settings added to ``spec.search`` later
(``ADDED_SEARCH_SETTINGS``) stay out of both while they are at their default, so the
digests of an existing target are the ones the previous release wrote. The pinned values
were computed by the release before ``spec.search.explore`` existed, for the same target.
"""

from __future__ import annotations

import yaml

from retune.controller import spec_digests
from retune.evaluate.contract import EvaluationContext
from retune.search.config import engine_config
from retune.spec import TargetSpec, parse_target
from retune.spec.search import ADDED_SEARCH_SETTINGS
from tests.test_spec import MINIMAL_CLUSTER

SEED = "def priority(x):\n    return x\n"
BEFORE_EXPLORE = {
    "signals": "deb0ec374bc8ab08",
    "search": "250f6aaa24b045b9",
    "budget": "1ab496a105d45c82",
    "fingerprint": "0f076bd02d95572a",
}


def target(code: bool = False, **search: object) -> TargetSpec:
    data = yaml.safe_load(MINIMAL_CLUSTER)
    data["spec"].setdefault("search", {}).update(search)
    if code:  # the program is searched, not only its parameters
        data["spec"]["policy"]["kind"] = "code"
        del data["spec"]["policy"]["parameters"]
    return parse_target(data, "test").spec


def identity(spec: TargetSpec) -> dict[str, str]:
    digests = spec_digests(spec)
    config = engine_config(spec, EvaluationContext(), seed_code=SEED, evaluator_source="e")
    return {
        "signals": digests.signals,
        "search": digests.search,
        "budget": digests.budget,
        "fingerprint": config.fingerprint,
    }


def test_an_existing_target_keeps_the_digests_the_previous_release_wrote() -> None:
    assert ADDED_SEARCH_SETTINGS == {"explore": 32, "freeShare": 0.6}
    assert identity(target()) == BEFORE_EXPLORE
    assert identity(target(explore=32)) == BEFORE_EXPLORE
    assert identity(target(explore=32, freeShare=0.6, freeStart=0)) == BEFORE_EXPLORE


def test_an_added_setting_away_from_its_default_is_a_new_search() -> None:
    for value in (8, 100_000):
        changed = identity(target(explore=value))
        assert changed["search"] != BEFORE_EXPLORE["search"]
        assert changed["fingerprint"] != BEFORE_EXPLORE["fingerprint"]
        assert (changed["signals"], changed["budget"]) == (
            BEFORE_EXPLORE["signals"],
            BEFORE_EXPLORE["budget"],
        )


def test_another_free_share_is_a_new_search_on_the_same_checkpoint_configuration() -> None:
    # The share decides which mutations are paid for, not how the engine runs: a target
    # that changes it searches again, and the engine state it would resume is unchanged.
    changed = identity(target(freeShare=0.2))
    assert changed["search"] != BEFORE_EXPLORE["search"]
    assert changed["fingerprint"] == BEFORE_EXPLORE["fingerprint"]


TIER = {
    "name": "cheap",
    "role": "mutate",
    "baseUrl": "http://127.0.0.1:9/v1",
    "model": "m",
    "pricing": {"inputPerMillion": 1.0, "outputPerMillion": 2.0},
}


def llm_target(**search: object) -> TargetSpec:
    return target(code=True, mutator="llm", models=[TIER], **search)


def test_a_free_start_is_an_llm_code_search_setting_outside_the_search_identity() -> None:
    # The free start runs apart from the search and leaves it as it would be without
    # it: like a budget, changing it (or an upgrade that sets it) is not a new search.
    before = identity(llm_target())
    for value in (0, 16, 200):
        assert identity(llm_target(freeStart=value)) == before
    assert engine_config(llm_target(), EvaluationContext(), seed_code=SEED).free_start == 200
    config = engine_config(llm_target(freeStart=16), EvaluationContext(), seed_code=SEED)
    assert config.free_start == 16
    for without_models in (target(code=True, freeStart=200), target(freeStart=200)):
        config = engine_config(without_models, EvaluationContext(), seed_code=SEED)
        assert config.free_start == 0, "no models, or only parameters: nothing to start"
    # what does identify a search still does
    assert identity(llm_target(freeShare=0.2))["search"] != before["search"]
