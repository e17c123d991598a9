"""An operator search's spend journal in a ConfigMap, on a real API server: the money a
search spent survives the operator's process, unsettled calls are charged at their worst
case, a resumed search takes the answers it paid for instead of asking again, the
ConfigMap stays small, and a second writer is refused."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client

from retune.evaluate.local import LocalExecutor
from retune.evaluate.podspec import sandbox_limits
from retune.handlers import spend as spend_module
from retune.handlers.spend import (
    ROLE_SPEND,
    ConfigMapSpendJournal,
    SpendConflict,
    SpendJournalUnreadable,
)
from retune.local.inputs import RunOptions, prepare
from retune.local.tiers import parse_tier_option
from retune.search.builder import SearchBuilder, SearchSetup
from retune.search.ledger import Budget, Ledger, LedgerState, ModelUsage
from retune.search.state import Stage, decode_state
from retune.store.kubernetes import KubernetesStore
from tests.cluster.controlplane import ControlPlane
from tests.cluster.test_store_kubernetes import owner_of
from tests.llm_server import REPO, MutationServer, call_usd, running_mutation_server

EXAMPLE_01 = REPO / "examples" / "01-cache-eviction" / "target.yaml"

SEARCH = "fingerprint-of-the-search"


def journal(api: client.ApiClient, namespace: str, owner: dict[str, Any]) -> ConfigMapSpendJournal:
    store = KubernetesStore(api, namespace=namespace, target="cache", owner=owner, role=ROLE_SPEND)
    return ConfigMapSpendJournal(store)


def paid_call(
    ledger: Ledger,
    usd: float,
    reserved: float = 0.01,
    model: str = "small",
    *,
    key: str = "",
    candidate: int | None = None,
    answer: dict[str, Any] | None = None,
) -> None:
    reservation = ledger.reserve_usd(reserved, model=model, key=key, candidate=candidate)
    assert reservation is not None
    ledger.settle(
        reservation, model=model, usd=usd, prompt_tokens=100, completion_tokens=10, answer=answer
    )


def an_answer(text: str) -> dict[str, Any]:
    return {
        "outcome": "ok",
        "text": text,
        "finish_reason": "stop",
        "prompt_tokens": 100,
        "completion_tokens": 10,
    }


def stored(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    config_map = client.CoreV1Api(api).read_namespaced_config_map("cache-spend", namespace)
    document: dict[str, Any] = json.loads(base64.b64decode(config_map.binary_data["spend"]))
    return document


def test_a_resumed_search_gets_its_money_from_the_journal_and_pays_for_calls_in_flight(
    cluster: ControlPlane, namespace: str
) -> None:
    api = cluster.api()
    owner = owner_of(api, namespace)
    first = journal(api, namespace, owner)
    assert first.start(SEARCH, resume=False) == {}
    ledger = Ledger(Budget(max_usd=0.10), journal=first)
    paid_call(ledger, 0.002)
    paid_call(ledger, 0.003, model="large")
    # a call in flight when the process dies: reserved, sent, never settled
    assert ledger.reserve_usd(0.02, model="large") is not None
    # the checkpoint was written before any of it
    checkpointed = LedgerState()

    second = journal(api, namespace, owner)
    assert second.start(SEARCH, resume=True, carried=checkpointed) == {}
    resumed = Ledger(Budget(max_usd=0.10), journal=second)
    resumed.restore(checkpointed)
    money = resumed.snapshot()
    assert money.usd_spent == pytest.approx(0.002 + 0.003 + 0.02)
    assert money.models["large"].calls == 2
    assert money.models["large"].charged_at_reservation == 1
    assert money.models["small"].prompt_tokens == 100
    # charged once: a third process finds the call settled, not open
    assert stored(api, namespace)["open"] == []
    third = journal(api, namespace, owner)
    third.start(SEARCH, resume=True)
    assert Ledger(Budget(), journal=third).usd_spent == pytest.approx(0.025)
    # and the budget left is what the journal says, not what the checkpoint said
    assert resumed.reserve_usd(0.08) is None
    assert resumed.reserve_usd(0.07) is not None

    config_map = client.CoreV1Api(api).read_namespaced_config_map("cache-spend", namespace)
    [reference] = config_map.metadata.owner_references
    assert (reference.name, reference.uid) == ("cache", owner["uid"])
    assert config_map.metadata.labels["retune.dev/role"] == "spend"


def test_the_journal_stays_small_and_exact_over_a_long_search(
    cluster: ControlPlane, namespace: str
) -> None:
    api = cluster.api()
    spend = journal(api, namespace, owner_of(api, namespace))
    spend.start(SEARCH, resume=False)
    ledger = Ledger(Budget(max_usd=5.0), journal=spend)
    for call in range(150):
        paid_call(ledger, 0.0001 * (call % 7 + 1))
    released = ledger.reserve_usd(0.01, model="small")
    assert released is not None
    ledger.release(released)

    document = stored(api, namespace)
    assert len(json.dumps(document)) < 2_000
    assert document["open"] == []
    expected = sum(0.0001 * (call % 7 + 1) for call in range(150))
    assert document["base"]["usd_spent"] == pytest.approx(expected)
    assert document["base"]["models"]["small"]["calls"] == 150


def test_a_fresh_search_hands_back_what_an_abandoned_one_left_unsettled(
    cluster: ControlPlane, namespace: str
) -> None:
    api = cluster.api()
    owner = owner_of(api, namespace)
    earlier = journal(api, namespace, owner)
    earlier.start(SEARCH, resume=False)
    ledger = Ledger(Budget(max_usd=1.0), journal=earlier)
    paid_call(ledger, 0.004)
    assert ledger.reserve_usd(0.03, model="large") is not None

    fresh = journal(api, namespace, owner)
    assert fresh.start(SEARCH, resume=False) == {"large": pytest.approx(0.03)}
    assert fresh.replaced_usd == pytest.approx(0.004)  # what the earlier one settled
    assert Ledger(Budget(), journal=fresh).usd_spent == 0.0


def test_a_search_checkpointed_without_a_journal_keeps_the_checkpoints_money(
    cluster: ControlPlane, namespace: str
) -> None:
    api = cluster.api()
    spend = journal(api, namespace, owner_of(api, namespace))
    checkpointed = LedgerState(
        evaluations=12, usd_spent=0.04, models={"small": ModelUsage(calls=9, usd=0.04)}
    )
    spend.start(SEARCH, resume=True, carried=checkpointed)
    ledger = Ledger(Budget(max_usd=0.05), journal=spend)
    ledger.restore(checkpointed)
    assert ledger.snapshot().usd_spent == pytest.approx(0.04)
    assert ledger.snapshot().evaluations == 12
    assert ledger.reserve_usd(0.02) is None


def test_a_second_writer_is_refused_and_its_call_is_not_made(
    cluster: ControlPlane, namespace: str
) -> None:
    api = cluster.api()
    owner = owner_of(api, namespace)
    ours, theirs = journal(api, namespace, owner), journal(api, namespace, owner)
    ours.start(SEARCH, resume=False)
    theirs.start(SEARCH, resume=True)
    Ledger(Budget(max_usd=1.0), journal=theirs).reserve_usd(0.01, model="small")

    ledger = Ledger(Budget(max_usd=1.0), journal=ours)
    with pytest.raises(SpendConflict, match="second operator"):
        ledger.reserve_usd(0.01, model="small")
    assert ledger.headroom() == pytest.approx(1.0)  # nothing held for a call never made
    with pytest.raises(SpendConflict):  # and refused from then on, not written over theirs
        ledger.reserve_usd(0.01, model="small")
    assert len(stored(api, namespace)["open"]) == 1  # theirs, untouched


def test_an_unreadable_journal_stops_the_resume_with_a_message(
    cluster: ControlPlane, namespace: str
) -> None:
    api = cluster.api()
    owner = owner_of(api, namespace)
    journal(api, namespace, owner).start(SEARCH, resume=False)
    garbage = base64.b64encode(b"{not json").decode()
    client.CoreV1Api(api).patch_namespaced_config_map(
        "cache-spend", namespace, {"binaryData": {"spend": garbage}}
    )
    with pytest.raises(SpendJournalUnreadable, match="delete the ConfigMap"):
        journal(api, namespace, owner).start(SEARCH, resume=True)
    # a new search replaces it
    fresh = journal(api, namespace, owner)
    assert fresh.start(SEARCH, resume=False) == {}
    assert stored(api, namespace)["open"] == []


def test_a_search_restarted_before_its_first_checkpoint_keeps_its_money_and_another_does_not(
    cluster: ControlPlane, namespace: str
) -> None:
    api = cluster.api()
    owner = owner_of(api, namespace)
    first = journal(api, namespace, owner)
    first.start(SEARCH, resume=False)
    paid_call(Ledger(Budget(max_usd=1.0), journal=first), 0.006)

    # the same search, started again with no checkpoint to resume: its money stays
    again = journal(api, namespace, owner)
    assert again.start(SEARCH, resume=True, carried=None) == {}
    assert Ledger(Budget(), journal=again).usd_spent == pytest.approx(0.006)
    # a search under another configuration starts from nothing
    other = journal(api, namespace, owner)
    assert other.start("another-configuration", resume=True) == {}
    assert Ledger(Budget(), journal=other).usd_spent == 0.0
    assert stored(api, namespace)["search"] == "another-configuration"


def test_the_same_search_restarted_under_another_configuration_keeps_its_money(
    cluster: ControlPlane, namespace: str
) -> None:
    # An upgraded operator resumes a search whose checkpoint its engine no longer takes:
    # the search starts afresh, but what it spent (and the call it had in flight) stays.
    api = cluster.api()
    owner = owner_of(api, namespace)
    first = journal(api, namespace, owner)
    first.start(SEARCH, resume=False, owner="3/2026-12-06T04:00:00+00:00")
    ledger = Ledger(Budget(max_usd=1.0), journal=first)
    paid_call(ledger, 0.006, key="q1", candidate=1, answer=an_answer("program 1"))
    assert ledger.reserve_usd(0.02, model="large") is not None  # in flight at the kill
    assert stored(api, namespace)["owner"] == "3/2026-12-06T04:00:00+00:00"

    again = journal(api, namespace, owner)
    started = again.start("upgraded-engine", resume=True, owner="3/2026-12-06T04:00:00+00:00")
    assert started == {}  # nothing abandoned: the money is carried, not handed back
    assert again.carried_usd == pytest.approx(0.026)
    restarted = Ledger(Budget(max_usd=0.03), journal=again)
    assert restarted.usd_spent == pytest.approx(0.026)  # the open call at its worst case
    assert restarted.reserve_usd(0.005) is None  # its budget counts what it spent before
    document = stored(api, namespace)
    assert (document["search"], document["answers"]) == ("upgraded-engine", [])

    # a journal of another search (or from before journals had owners) is replaced
    for other_owner in ("4/2026-12-06T05:00:00+00:00", ""):
        other = journal(api, namespace, owner)
        assert other.start("a-third-engine", resume=True, owner=other_owner) == {}
        assert other.carried_usd == 0.0
        assert Ledger(Budget(), journal=other).usd_spent == 0.0


def test_a_write_whose_answer_was_lost_is_not_taken_for_a_second_writer(
    cluster: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = cluster.api()
    spend = journal(api, namespace, owner_of(api, namespace))
    spend.start(SEARCH, resume=False)
    store = spend._store
    save = store.save
    lost = []

    def save_then_lose_the_answer(document: bytes) -> None:
        version = store._version
        save(document)
        if not lost:  # applied by the API server; its answer (the new version) never came
            lost.append(document)
            store._version = version
            raise urllib3.exceptions.ProtocolError("connection reset after the write")

    monkeypatch.setattr(store, "save", save_then_lose_the_answer)
    ledger = Ledger(Budget(max_usd=1.0), journal=spend)
    paid_call(ledger, 0.002)  # its reserve was the write whose answer was lost
    paid_call(ledger, 0.003)
    assert lost
    assert stored(api, namespace)["base"]["usd_spent"] == pytest.approx(0.005)


def test_a_resumed_search_takes_the_answers_it_paid_for_until_a_checkpoint_holds_them(
    cluster: ControlPlane, namespace: str
) -> None:
    api = cluster.api()
    owner = owner_of(api, namespace)
    first = journal(api, namespace, owner)
    first.start(SEARCH, resume=False)
    ledger = Ledger(Budget(max_usd=1.0), journal=first)
    paid_call(ledger, 0.001, key="q5", candidate=5, answer=an_answer("for 5"))
    paid_call(ledger, 0.001, key="q6", candidate=6, answer=an_answer("for 6"))
    # a checkpoint holds candidate 5's program; candidate 6 was still being asked
    ledger.checkpointed(frozenset({6}))
    paid_call(ledger, 0.001, key="q7", candidate=7, answer=an_answer("for 7"))
    paid_call(ledger, 0.001, key="q8", candidate=8)  # no usable answer: nothing to keep

    assert [r["key"] for r in stored(api, namespace)["answers"]] == ["q6", "q7"]
    resumed_journal = journal(api, namespace, owner)
    resumed_journal.start(SEARCH, resume=True)
    resumed = Ledger(Budget(max_usd=1.0), journal=resumed_journal)
    assert resumed.paid_answer("q5") is None
    assert resumed.paid_answer("q6") == an_answer("for 6")
    assert resumed.paid_answer("q7") == an_answer("for 7")
    assert resumed.paid_answer("q7") is None, "a paid answer is used once"
    assert resumed.usd_spent == pytest.approx(0.004)  # kept answers are not charged again
    # the next checkpoint holds them all: they go with the next write
    resumed.checkpointed(frozenset())
    paid_call(resumed, 0.001)
    assert stored(api, namespace)["answers"] == []


def test_the_answers_kept_are_bounded_oldest_first(
    cluster: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = cluster.api()
    spend = journal(api, namespace, owner_of(api, namespace))
    spend.start(SEARCH, resume=False)
    ledger = Ledger(Budget(max_usd=1.0), journal=spend)
    monkeypatch.setattr(spend_module, "MAX_ANSWER_BYTES", 4_000)
    for candidate in range(6):  # about 1,200 bytes each: three fit
        answer = an_answer(f"program {candidate}\n" + "x" * 1_000)
        paid_call(ledger, 0.001, key=f"q{candidate}", candidate=candidate, answer=answer)
    document = stored(api, namespace)
    assert [r["key"] for r in document["answers"]] == ["q3", "q4", "q5"]
    assert document["base"]["models"]["small"]["calls"] == 6  # the money is all there


class Killed(BaseException):
    """The operator's process dies (here: at a checkpoint, after what came before it)."""


class DyingStore:
    """The checkpoint ConfigMap's store, killing the search at its ``dies_at``-th save."""

    def __init__(self, store: KubernetesStore, dies_at: int | None) -> None:
        self.store, self.dies_at, self.saves = store, dies_at, 0
        self.asking: list[set[int]] = []  # per checkpoint, the candidates still being asked

    def load(self) -> bytes | None:
        return self.store.load()

    def save(self, document: bytes) -> None:
        self.saves += 1
        if self.saves == self.dies_at:
            raise Killed
        self.store.save(document)
        pending = decode_state(document).pending.values()
        self.asking.append({c.index for c in pending if c.stage is Stage.PLANNED})


class WatchedJournal(ConfigMapSpendJournal):
    """The spend journal, remembering what each checkpoint told it."""

    def __init__(self, store: KubernetesStore) -> None:
        super().__init__(store)
        self.told: list[set[int]] = []

    def checkpointed(self, asking: frozenset[int]) -> None:
        self.told.append(set(asking))
        super().checkpointed(asking)


def search_in_the_operator(
    api: client.ApiClient,
    namespace: str,
    owner: dict[str, Any],
    server: MutationServer,
    output: Path,
    *,
    resume: bool,
    dies_at: int | None = None,
    watch: list[tuple[DyingStore, WatchedJournal]],
    seed: int = 7,
    max_usd: float | None = None,
    search_id: str = "",
) -> None:
    """An LLM search of examples/01 as the operator runs one (the checkpoint and the spend
    journal in ConfigMaps); its checkpoint store and journal go to ``watch``. Another
    ``seed`` is another configuration (its checkpoint is not resumed)."""
    options = RunOptions(
        output=output,
        seed=seed,
        max_usd=max_usd,
        max_evaluations=24,
        mutator="llm",
        llm_base_url=server.base_url,
        models=[parse_tier_option(m) for m in ("cheap=small@0.15/0.60", "strong=large@2.50/10.00")],
        free_start=0,
        show_progress=False,
    )
    inputs = prepare(EXAMPLE_01, options)
    builder = SearchBuilder(
        SearchSetup(
            inputs.target.spec,
            inputs.context,
            seed_code=inputs.seed_code,
            evaluator_identity=inputs.evaluator_path.read_text(),
            budget=inputs.budget,
            seed=seed,
            mutator=inputs.mutator,
            models=inputs.models,
        )
    )
    spend = WatchedJournal(
        KubernetesStore(api, namespace=namespace, target="cache", owner=owner, role=ROLE_SPEND)
    )
    spend.start(builder.config.fingerprint, resume=resume, owner=search_id)
    ledger = builder.ledger(spend)
    executor = LocalExecutor(
        inputs.evaluator_path,
        inputs.target.spec.policy.entrypoint,
        sandbox_limits(inputs.target.spec.evaluator),
        workers=2,
    )
    checkpoints = KubernetesStore(api, namespace=namespace, target="cache", owner=owner)
    document = checkpoints.load()  # resumed only under its own configuration, as run_search
    resumable = resume and document is not None
    resumable = resumable and decode_state(document).fingerprint == builder.config.fingerprint
    store = DyingStore(checkpoints, dies_at)
    watch.append((store, spend))
    try:
        builder.build(
            executor=executor,
            store=store,
            ledger=ledger,
            mutator=builder.mutator(ledger),
            resume=resumable,
        ).run()
    finally:
        executor.close()


@pytest.mark.slow
def test_a_search_killed_and_resumed_asks_no_question_twice(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    api = cluster.api()
    owner = owner_of(api, namespace)
    watch: list[tuple[DyingStore, WatchedJournal]] = []
    with running_mutation_server(seed=1) as server:
        with pytest.raises(Killed):
            search_in_the_operator(
                api, namespace, owner, server, tmp_path / "a", resume=False, dies_at=12, watch=watch
            )
        before_kill = len(server.calls())
        answers_kept = len(stored(api, namespace)["answers"])
        search_in_the_operator(
            api, namespace, owner, server, tmp_path / "b", resume=True, watch=watch
        )
        served = server.calls()
        journal_money = stored(api, namespace)["base"]

    # each checkpoint told the journal which candidates it does not hold the programs of
    for store, spend in watch:
        assert spend.told == store.asking
    assert any(asking for store, _ in watch for asking in store.asking)

    # calls answered after the last checkpoint were kept, and taken instead of asked again
    asked = Counter(call["request"] for call in served)
    assert [r for r, n in asked.items() if n > 1] == []
    assert answers_kept >= 1
    assert len(served) > before_kill  # the resumed search did go on asking
    assert journal_money["usd_spent"] == pytest.approx(
        sum(call_usd(c["model"], c["prompt_tokens"], c["completion_tokens"]) for c in served)
    )


@pytest.mark.slow
def test_a_search_restarted_under_another_configuration_spends_its_budget_once(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    # Killed after a dozen checkpoints, the search is resumed by an operator whose engine
    # configuration differs (here: another seed), so it starts afresh: with the budget of
    # a search that has spent what the first attempt spent, not a new one.
    api = cluster.api()
    owner = owner_of(api, namespace)
    watch: list[tuple[DyingStore, WatchedJournal]] = []
    search_id = "1/2026-12-06T04:00:00+00:00"
    with running_mutation_server(seed=1) as server:
        with pytest.raises(Killed):
            search_in_the_operator(
                api,
                namespace,
                owner,
                server,
                tmp_path / "a",
                resume=False,
                dies_at=12,
                watch=watch,
                search_id=search_id,
            )
        first_usd = stored(api, namespace)["base"]["usd_spent"]
        assert first_usd > 0
        budget = round(first_usd + 0.002, 6)  # a few more cheap calls, not a second search
        search_in_the_operator(
            api,
            namespace,
            owner,
            server,
            tmp_path / "b",
            resume=True,
            watch=watch,
            seed=8,
            max_usd=budget,
            search_id=search_id,
        )
        served = server.calls()
        journal_money = stored(api, namespace)["base"]

    every_call = sum(
        call_usd(c["model"], c["prompt_tokens"], c["completion_tokens"]) for c in served
    )
    assert every_call <= budget + 1e-9  # the two attempts together stayed in the budget
    assert journal_money["usd_spent"] == pytest.approx(every_call)  # both attempts' calls
    assert journal_money["usd_spent"] > first_usd  # and the second did make calls
    _, restarted = watch[-1]
    assert restarted.carried_usd == pytest.approx(first_usd)
