"""An operator search's spend journal in a ConfigMap, on a real API server: the money a
search spent survives the operator's process, unsettled calls are charged at their worst
case, the ConfigMap stays small, and a second writer is refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import urllib3
from kubernetes import client

from retune.handlers.spend import (
    ConfigMapSpendJournal,
    SpendConflict,
    SpendJournalUnreadable,
)
from retune.search.ledger import Budget, Ledger, LedgerState, ModelUsage
from tests.cluster.controlplane import ControlPlane
from tests.cluster.test_store_kubernetes import owner_of

SEARCH = "fingerprint-of-the-search"


def journal(api: client.ApiClient, namespace: str, owner: dict[str, Any]) -> ConfigMapSpendJournal:
    return ConfigMapSpendJournal(api, namespace=namespace, target="cache", owner=owner)


def paid_call(ledger: Ledger, usd: float, reserved: float = 0.01, model: str = "small") -> None:
    reservation = ledger.reserve_usd(reserved, model=model)
    assert reservation is not None
    ledger.settle(reservation, model=model, usd=usd, prompt_tokens=100, completion_tokens=10)


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
