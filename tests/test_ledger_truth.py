"""The ledger is the truth, and the budget holds, whatever the endpoint or a kill does.

Given a ledger with its spend journal, when a call is reserved it is on disk before the
request goes out; when the run is killed mid-call and resumed, the call is charged its
reservation once and never re-paid; when the endpoint reports more than a request could
cost, or answers late or cut off, the call is charged its reservation and the excess is
recorded, flagged, and stops further paid calls once the budget is reached.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from retune.search.journal import SpendJournal
from retune.search.ledger import Budget, Ledger
from retune.search.llm.audit import AuditLog
from retune.search.llm.client import ChatEndpoint
from retune.search.llm.mutator import LLMMutator, Tier
from retune.search.llm.pricing import cost_usd
from retune.search.llm.prompts import PolicyBrief
from retune.spec import Pricing
from tests.fault_proxy import ABSURD_PROMPT_TOKENS, FaultProxy
from tests.llm_server import MODELS, REPO, MutationServer, running_mutation_server
from tests.test_llm_mutator import FAST_RETRY, SIGNATURE, never_duplicate, request

MAX_USD = 0.05
PRICES = Pricing(input_per_million=0.15, output_per_million=0.60)  # the stand-in's small


def journal_ledger(path: Path, max_usd: float | None = None) -> Ledger:
    return Ledger(Budget(max_usd=max_usd), journal=SpendJournal(path / "spend.jsonl"))


# -- the ledger alone -----------------------------------------------------------------------
def test_a_reservation_killed_before_it_settles_is_charged_once_on_resume(tmp_path: Path) -> None:
    before = journal_ledger(tmp_path, max_usd=1.0)
    reservation = before.reserve_usd(0.01, model="small", key="k")
    assert reservation is not None
    ops = [r["op"] for r in SpendJournal(tmp_path / "spend.jsonl").records()]
    assert ops == ["reserve"], "the reservation must be on disk before the call is made"
    # kill -9 here: `before` is gone without settling.
    resumed = journal_ledger(tmp_path, max_usd=1.0)
    assert resumed.usd_spent == pytest.approx(0.01)
    assert resumed.snapshot().models["small"].charged_at_reservation == 1
    again = journal_ledger(tmp_path, max_usd=1.0)  # resumed (and killed) once more
    assert again.usd_spent == pytest.approx(0.01)


def test_settled_calls_survive_a_kill_and_their_answers_are_not_asked_again(
    tmp_path: Path,
) -> None:
    before = journal_ledger(tmp_path)
    reservation = before.reserve_usd(0.01, model="small", key="question")
    assert reservation is not None
    answer = {"outcome": "ok", "text": "x", "finish_reason": "stop"}
    answer |= {"prompt_tokens": 10, "completion_tokens": 5}
    before.settle(
        reservation, model="small", usd=0.002, prompt_tokens=10, completion_tokens=5, answer=answer
    )
    resumed = journal_ledger(tmp_path)
    resumed.restore(resumed.snapshot().model_copy(update={"usd_spent": 0.0}))  # stale checkpoint
    assert resumed.usd_spent == pytest.approx(0.002)
    assert resumed.paid_answer("question") == answer
    assert resumed.paid_answer("question") is None, "a paid answer is used once"


def test_usage_above_the_reservation_is_recorded_apart_and_stops_paid_calls(
    tmp_path: Path,
) -> None:
    ledger = journal_ledger(tmp_path, max_usd=0.05)
    reservation = ledger.reserve_usd(0.001, model="small")
    assert reservation is not None
    settlement = ledger.settle(
        reservation,
        model="small",
        usd=1.03,
        prompt_tokens=ABSURD_PROMPT_TOKENS,
        completion_tokens=1,
    )
    assert settlement.charged_usd == pytest.approx(0.001)
    assert settlement.over_reported_usd == pytest.approx(1.029)
    state = ledger.snapshot()
    assert state.usd_spent <= 0.05
    assert state.over_reported_usd == pytest.approx(1.029)
    assert state.models["small"].prompt_tokens == ABSURD_PROMPT_TOKENS  # as reported
    assert ledger.reserve_usd(0.0001) is None, "the reported truth has reached the budget"


def test_a_call_of_unknown_cost_is_charged_its_reservation(tmp_path: Path) -> None:
    ledger = journal_ledger(tmp_path)
    reservation = ledger.reserve_usd(0.004, model="small")
    assert reservation is not None
    ledger.settle(
        reservation, model="small", usd=0.0, prompt_tokens=0, completion_tokens=0, cost_known=False
    )
    assert ledger.usd_spent == pytest.approx(0.004)


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    ledger = journal_ledger(tmp_path)
    assert ledger.reserve_usd(0.003, model="small") is not None
    with (tmp_path / "spend.jsonl").open("a") as handle:
        handle.write('{"op": "reserve", "id": "torn", "us')  # killed mid-write
    assert journal_ledger(tmp_path).usd_spent == pytest.approx(0.003)


# -- through the stand-in server and a billing proxy ------------------------------------
@pytest.fixture(scope="module")
def server() -> Any:
    with running_mutation_server(seed=3, retry_after=0.05) as running:
        yield running


def proxied_mutator(proxy: FaultProxy, ledger: Ledger, audit: Path) -> LLMMutator:
    endpoint = ChatEndpoint(
        base_url=proxy.base_url, api_key="k", model="small", timeout_seconds=1.0
    )
    tier = Tier(
        name="small", role="mutate", endpoint=endpoint, prices=PRICES, max_output_tokens=600
    )
    brief = PolicyBrief("priority", SIGNATURE, "", "code")
    return LLMMutator([tier], brief, ledger, None, seed=1, audit=AuditLog(audit), retry=FAST_RETRY)


def served_usd(proxy: FaultProxy) -> dict[str, float]:
    return {
        s["call"]: cost_usd(PRICES, s["prompt_tokens"], s["completion_tokens"])
        for s in proxy.served
    }


@pytest.mark.parametrize("fault", ["absurd", "late", "cut"])
def test_a_served_answer_that_does_not_arrive_as_it_should_is_charged_its_reservation(
    fault: str, server: MutationServer, tmp_path: Path
) -> None:
    server.reset()
    ledger = journal_ledger(tmp_path, max_usd=0.05)
    with FaultProxy(server.base_url, {fault: 1.0}, late_seconds=2.0) as proxy:
        result = proxied_mutator(proxy, ledger, tmp_path / "audit.jsonl").mutate(
            request(0), never_duplicate
        )
        served = served_usd(proxy)
    assert result.ok == (fault == "absurd")  # an absurd bill comes with a good answer
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert served and set(served) <= {line["call_id"] for line in lines}
    state = ledger.snapshot()
    assert state.usd_spent == pytest.approx(sum(line["reserved_usd"] for line in lines))
    assert state.usd_spent <= 0.05
    if fault == "absurd":
        assert all(line["over_reported_usd"] > 0 for line in lines)
        assert state.usd_spent + state.over_reported_usd == pytest.approx(sum(served.values()))
    else:
        assert all(line["charged_at_reservation"] for line in lines)
        assert state.usd_spent >= sum(served.values())


def test_a_fault_free_call_is_charged_exactly_what_was_served(
    server: MutationServer, tmp_path: Path
) -> None:
    server.reset()
    ledger = journal_ledger(tmp_path)
    with FaultProxy(server.base_url, {}, late_seconds=0) as proxy:
        mutator = proxied_mutator(proxy, ledger, tmp_path / "audit.jsonl")
        for seed in range(3):
            mutator.mutate(request(seed), never_duplicate)
        served = served_usd(proxy)
    assert len(served) >= 3
    assert ledger.usd_spent == pytest.approx(sum(served.values()))
    assert MODELS["small"].input_per_million == PRICES.input_per_million  # the stand-in's own price


# -- retune run, killed three times mid-call and resumed ------------------------------------
EXAMPLE = REPO / "examples" / "01-cache-eviction"
STAND_IN_FAULTS = "429:0.05,500:0.04,drop:0.04,malformed:0.04,truncate:0.06,garbage:0.04"
PROXY_FAULTS = {"absurd": 0.04, "late": 0.08, "cut": 0.06}
TIER_PRICES = {"small": (0.15, 0.60), "large": (2.50, 10.00)}


def faulty_target(tmp_path: Path, base_url: str) -> Path:
    """examples/01 with smaller traces, searching with the stand-in's two models."""
    copy = tmp_path / "target"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("workload", "baselines*"))
    text = (copy / "target.yaml").read_text()
    for old, new in [
        ("requests_full: 80000", "requests_full: 6000"),
        ("requests_quick: 24000", "requests_quick: 2000"),
        ("sim_keys: 20000", "sim_keys: 3000"),
    ]:
        assert old in text
        text = text.replace(old, new)
    tiers = "".join(
        f"      - {{name: {name}, role: {role}, baseUrl: '{base_url}', model: {name},"
        f" timeoutSeconds: 1, maxOutputTokens: 1500,"
        f" pricing: {{inputPerMillion: {TIER_PRICES[name][0]},"
        f" outputPerMillion: {TIER_PRICES[name][1]}}}}}\n"
        for name, role in (("small", "mutate"), ("large", "paradigm"))
    )
    assert "    mutator: builtin\n" in text
    text = text.replace("    mutator: builtin\n", "    mutator: llm\n    models:\n" + tiers)
    (copy / "target.yaml").write_text(text)
    return copy / "target.yaml"


def open_reservations(journal: Path) -> int:
    records = SpendJournal(journal).records()
    closed = {r["id"] for r in records if r["op"] != "reserve"}
    return sum(r["op"] == "reserve" and r["id"] not in closed for r in records)


@pytest.mark.slow
def test_killed_three_times_mid_call_the_ledger_is_what_was_served_and_the_budget_holds(
    server: MutationServer, tmp_path: Path
) -> None:
    server.reset()
    server.set_faults(STAND_IN_FAULTS)
    output = tmp_path / "out"
    paths = [str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    with FaultProxy(server.base_url, PROXY_FAULTS, late_seconds=1.5) as proxy:
        target = faulty_target(tmp_path, proxy.base_url)
        command = [
            sys.executable, "-m", "retune.cli", "run", str(target), "--max-usd", str(MAX_USD),
            "--max-evaluations", "40", "--workers", "2", "--seed", "5", "--quiet",
            "--output", str(output),
        ]  # fmt: skip
        journal = output / "spend.jsonl"
        kills = 0
        for attempt in range(3):
            argv = command + (["--resume"] if attempt else [])
            process = subprocess.Popen(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + 20
            settled_before = len(SpendJournal(journal).records())
            while process.poll() is None and time.monotonic() < deadline:
                records = len(SpendJournal(journal).records())
                if records > settled_before + 6 and open_reservations(journal):
                    os.killpg(process.pid, signal.SIGKILL)  # mid-call: a reservation is open
                    kills += 1
                    break
                time.sleep(0.05)
            process.wait()
        assert kills == 3, "every run was meant to be killed mid-call"
        completed = subprocess.run(
            [*command, "--resume"], env=env, capture_output=True, text=True, timeout=120
        )
        assert completed.returncode in (0, 3), completed.stderr
        assert "Traceback" not in completed.stderr
        served = list(proxy.served)

    result = json.loads((output / "result.json").read_text())
    assert result["cost_usd"] <= MAX_USD
    records = SpendJournal(journal).records()
    reserved = {r["id"]: r for r in records if r["op"] == "reserve"}
    settled = {r["id"]: r for r in records if r["op"] == "settle"}
    assert set(reserved) == set(settled), "every reservation is settled in the end"
    # Every call the provider served was reserved first, and is charged what it served,
    # or -- when its cost was unknown to retune -- its reservation, which bounds it.
    billed = {
        s["call"]: cost_usd(_prices(s["model"]), s["prompt_tokens"], s["completion_tokens"])
        for s in served
    }
    assert set(billed) <= set(reserved)
    for call, record in settled.items():
        charged = record["usd"] + record.get("over_reported_usd", 0.0)
        if record["at_reservation"]:
            assert record["usd"] == pytest.approx(reserved[call]["usd"])
            assert billed.get(call, 0.0) <= record["usd"] + 1e-12
        else:
            assert charged == pytest.approx(billed.get(call, 0.0), abs=1e-12), record
    ledger = result["cost_usd"] + result["over_reported_usd"]
    unknown = sum(r["usd"] - billed.get(i, 0.0) for i, r in settled.items() if r["at_reservation"])
    assert ledger == pytest.approx(sum(billed.values()) + unknown, abs=1e-9)
    # Answers paid for before a kill were used again, not asked (and paid) again.
    answered = [reserved[i]["key"] for i, r in settled.items() if r.get("answer")]
    assert len(answered) == len(set(answered))


def _prices(model: str) -> Pricing:
    per_in, per_out = TIER_PRICES[model]
    return Pricing(input_per_million=per_in, output_per_million=per_out)
