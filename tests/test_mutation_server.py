"""The stand-in model server itself: OpenAI wire format, determinism, accounting, faults."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from retune.search.llm.parse import parse_answer
from retune.search.llm.prompts import PolicyBrief, build_prompt
from retune.search.mutation import MutationKind, MutationRequest
from tests.llm_server import REPO, MutationServer, running_mutation_server

SEED_POLICY = (REPO / "examples" / "01-cache-eviction" / "seed_policy.py").read_text()
BRIEF = PolicyBrief(
    entrypoint="priority",
    signature=(
        "priority(size: int, now: float, last_access: float, access_count: int, "
        "insert_time: float, evicted_count: int, last_evicted: float) -> float"
    ),
    description="Eviction priority of a cached object; the lowest is evicted.",
    kind="code",
)


@pytest.fixture(scope="module")
def server() -> Iterator[MutationServer]:
    with running_mutation_server(seed=3) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(server: MutationServer) -> None:
    server.reset()


def post(server: MutationServer, path: str, body: object) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        server.root + path, data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def chat(model: str, kind: MutationKind, seed: int = 1, **extra: Any) -> dict[str, Any]:
    prompt = build_prompt(MutationRequest(kind=kind, parent_code=SEED_POLICY, seed=0), BRIEF)
    return {"model": model, "messages": prompt.messages(), "seed": seed, **extra}


def test_models_are_listed_with_their_prices(server: MutationServer) -> None:
    with urllib.request.urlopen(server.base_url + "/models", timeout=10) as response:
        listed = json.loads(response.read())
    prices = {m["id"]: m["pricing"] for m in listed["data"]}
    assert prices == {
        "small": {"input_per_million": 0.15, "output_per_million": 0.60},
        "large": {"input_per_million": 2.50, "output_per_million": 10.00},
    }


@pytest.mark.parametrize(
    ("model", "kind", "summary"),
    [
        ("small", MutationKind.MUTATE, "diff blocks applied"),
        ("large", MutationKind.MUTATE, "diff blocks applied"),
        ("large", MutationKind.PARADIGM, "full program"),
        ("small", MutationKind.INIT, "full program"),
    ],
)
def test_it_mutates_the_example_seed_in_the_asked_format(
    server: MutationServer, model: str, kind: MutationKind, summary: str
) -> None:
    status, body = post(server, "/v1/chat/completions", chat(model, kind))
    assert status == 200
    text = body["choices"][0]["message"]["content"]
    outcome = parse_answer(text, parent_code=SEED_POLICY, entrypoint="priority")
    assert outcome.code is not None, (outcome.failure, text)
    assert summary in outcome.summary
    assert not text.startswith(("```", "<<<"))  # prose first, as a model writes


def test_an_answer_depends_on_model_prompt_and_seed_only(server: MutationServer) -> None:
    first = post(server, "/v1/chat/completions", chat("small", MutationKind.MUTATE))[1]
    post(server, "/v1/chat/completions", chat("large", MutationKind.PARADIGM))  # in between
    again = post(server, "/v1/chat/completions", chat("small", MutationKind.MUTATE))[1]
    other = post(server, "/v1/chat/completions", chat("small", MutationKind.MUTATE, seed=2))[1]
    assert first == again
    assert other["choices"] != first["choices"]


def test_stats_add_up_the_usage_reported(server: MutationServer) -> None:
    usages = [
        post(server, "/v1/chat/completions", chat(model, MutationKind.MUTATE, seed=s))[1]["usage"]
        for model in ("small", "large")
        for s in range(3)
    ]
    expected = {
        model: {
            "prompt_tokens": sum(u["prompt_tokens"] for u in usages[i * 3 : i * 3 + 3]),
            "completion_tokens": sum(u["completion_tokens"] for u in usages[i * 3 : i * 3 + 3]),
        }
        for i, model in enumerate(("small", "large"))
    }
    assert server.stats() == expected
    assert all(u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] for u in usages)


def test_max_tokens_cuts_the_answer(server: MutationServer) -> None:
    body = post(server, "/v1/chat/completions", chat("large", MutationKind.PARADIGM, max_tokens=20))
    choice = body[1]["choices"][0]
    assert choice["finish_reason"] == "length"
    assert body[1]["usage"]["completion_tokens"] == 20


def test_errors_are_in_the_openai_shape(server: MutationServer) -> None:
    status, body = post(server, "/v1/chat/completions", chat("medium", MutationKind.MUTATE))
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, body = post(server, "/admin/faults", {"faults": "explode:0.5"})
    assert status == 400 and "explode" in body["error"]["message"]
    server.set_faults("500@large:#1")
    assert post(server, "/v1/chat/completions", chat("small", MutationKind.MUTATE))[0] == 200
    assert post(server, "/v1/chat/completions", chat("large", MutationKind.MUTATE))[0] == 500
    assert post(server, "/v1/chat/completions", chat("large", MutationKind.MUTATE))[0] == 200
    assert set(server.stats()) == {"small", "large"}
