"""The stand-in model server itself: OpenAI wire format, determinism, accounting, faults."""

from __future__ import annotations

import json
import re
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


# -- the peers' prompts (bench/vs_peers.py) ---------------------------------------------------
SEED_WITH_AN_EDIT = 1  # a request seed for which the stand-in finds an edit (most do)
OTHER_PROGRAM = (REPO / "examples" / "01-cache-eviction" / "baselines" / "lfu.py").read_text()


def openevolve_style_chat(seed: int = SEED_WITH_AN_EDIT) -> dict[str, Any]:
    """A request shaped like OpenEvolve's diff prompts: the problem in the system message,
    other programs shown first, the parent under a ``# Current Program`` heading."""
    system = (
        "You are an expert coder helping to improve programs through evolution.\n"
        f"The program must define `priority` with exactly this signature: `{BRIEF.signature}`."
    )
    user = (
        "# Current Program Information\n- Fitness: 0.4600\n\n"
        "# Program Evolution History\n## Top Performing Programs\n\n"
        f"### Program 1 (Score: 0.4719)\n```python\n{OTHER_PROGRAM}```\n\n"
        f"# Current Program\n```python\n{SEED_POLICY}```\n\n"
        "# Task\nSuggest improvements. You MUST use the exact SEARCH/REPLACE diff format:\n"
        "<<<<<<< SEARCH\n# Original code\n=======\n# New code\n>>>>>>> REPLACE\n"
    )
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return {"model": "small", "messages": messages, "seed": seed}


def get(server: MutationServer, path: str) -> Any:
    with urllib.request.urlopen(server.root + path, timeout=10) as response:
        return json.loads(response.read())


def test_it_edits_the_current_program_of_an_openevolve_prompt(server: MutationServer) -> None:
    import hashlib

    status, body = post(server, "/v1/chat/completions", openevolve_style_chat())
    assert status == 200
    text = body["choices"][0]["message"]["content"]
    assert "<<<<<<< SEARCH" in text  # the diff format the prompt asks for
    outcome = parse_answer(text, parent_code=SEED_POLICY, entrypoint="priority")
    assert outcome.code is not None, (outcome.failure, text)  # it applies to the parent,
    assert "Seed policy: least recently used" in outcome.code  # not to the LFU shown first
    # /calls names the program the answer wrote, so a benchmark can trace scores to calls.
    (call,) = get(server, "/calls")
    assert call["model"] == "small" and call["prompt_tokens"] == body["usage"]["prompt_tokens"]
    assert call["program_sha256"] == hashlib.sha256(outcome.code.strip().encode()).hexdigest()
    server.reset()
    assert get(server, "/calls") == []


LEVI_SIGNATURE = f"def {BRIEF.signature}:"
LEVI_PROBLEM = (
    "Eviction priority of a cached object; the lowest is evicted.\n"
    f"The program must define `priority` with exactly this signature: `{BRIEF.signature}`."
)


def levi_prompts() -> dict[str, str]:
    """Prompts laid out as LEVI 0.1.1 (and GEPA 0.1.4) lay them out: the signature in a
    fence of its own before any program, and the program to edit under a heading of each
    kind's."""
    signature = f"## Signature\n```python\n{LEVI_SIGNATURE}\n```"
    problem = f"## Problem\n{LEVI_PROBLEM}"
    full = "## Output\nWrite an improved version of the function.\n```python\n# imports\n```"
    return {
        "mutation": f"{problem}\n\n{signature}\n\n## v1\nScore: N/A\n```python\n"
        f"{SEED_POLICY}```\n\n## v2\nScore: N/A\n```python\n{OTHER_PROGRAM}```\n\n{full}",
        "diversity": f"# Algorithm Optimization\n\n{problem}\n\n## Function Signature\n"
        f"```python\n{LEVI_SIGNATURE}\n```\n\n## Existing Seeds (analyze their algorithms, "
        f"then do something DIFFERENT):\n### Seed 1 (Score: 0.46):\n```python\n{SEED_POLICY}"
        "```\n\n## Output\nOutput ONLY the complete Python code in a ```python block.\n",
        "paradigm shift": f"# Algorithmic Paradigm Shift Challenge\n\n{problem}\n\n"
        f"## Function Signature\n```python\n{LEVI_SIGNATURE}\n```\n\n## Current Best "
        "Solutions (From Different Behavioral Regions)\n\n### Region 1 (Cluster 0, Score: "
        f"0.46)\n```python\n{SEED_POLICY}```\n\n### Region 2 (Cluster 1, Score: 0.41)\n"
        f"```python\n{OTHER_PROGRAM}```\n\n## Output\nOutput ONLY complete code.\n",
        # GEPA 0.1.4's optimize_anything: the candidate in a fence without a language tag
        "gepa reflection": "You are an expert optimization assistant.\n\n## Optimization Goal"
        f"\n\n{LEVI_PROBLEM}\n\n## Current Component\n\nThe component being optimized:\n\n"
        f"```\n{SEED_POLICY}```\n\n## Evaluation Results\n\n```\nscore: 0.46\n```\n\n"
        "## Output Format\n\nProvide ONLY the improved version within ``` blocks.",
        "variant": f"# Generate Variant of Paradigm Shift Solution\n\n{problem}\n\n"
        f"## Function Signature\n```python\n{LEVI_SIGNATURE}\n```\n\n## Base Paradigm "
        f"Shift Solution (Score: 0.46)\n```python\n{SEED_POLICY}```\n\n## Your Task\n...",
    }


@pytest.mark.parametrize("kind", sorted(levi_prompts()))
def test_it_edits_the_program_levi_asks_about_as_a_whole_program(
    server: MutationServer, kind: str
) -> None:
    messages = [{"role": "user", "content": levi_prompts()[kind]}]
    for model in ("small", "large"):
        status, body = post(server, "/v1/chat/completions", {"model": model, "messages": messages})
        assert status == 200
        text = body["choices"][0]["message"]["content"]
        assert "<<<<<<< SEARCH" not in text  # LEVI's default asks for whole programs
        code = re.search(r"```python\n(.*?)```", text, re.DOTALL)
        assert code is not None, text
        # the program under LEVI's heading, edited: not the signature, not the other one
        assert "Seed policy: least recently used" in code.group(1), text
        assert code.group(1).strip() != SEED_POLICY.strip()


def test_fresh_repeats_answer_a_repeated_request_anew() -> None:
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from server_process import MutationServerProcess

    def answer(server: MutationServerProcess) -> str:
        request = urllib.request.Request(
            server.base_url + "/chat/completions",
            data=json.dumps(openevolve_style_chat(seed=42)).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.loads(response.read())["choices"][0]["message"]["content"])

    with MutationServerProcess(seed=3, fresh_repeats=False) as fixed:
        assert answer(fixed) == answer(fixed)
    with MutationServerProcess(seed=3, fresh_repeats=True) as fresh:
        first, second, third = answer(fresh), answer(fresh), answer(fresh)
        assert len({first, second, third}) > 1
        fresh.reset()  # a reset forgets the repeats too
        assert answer(fresh) == first


def test_bold_edits_pass_the_allowlist(server: MutationServer) -> None:
    from retune.evaluate.allowlist import check_policy

    for seed in range(5):
        body = post(server, "/v1/chat/completions", chat("large", MutationKind.PARADIGM, seed))[1]
        text = body["choices"][0]["message"]["content"]
        code = parse_answer(text, parent_code=SEED_POLICY, entrypoint="priority").code
        assert code is not None and re.search(r"if \w+ >=? ", code)  # the added branch
        assert check_policy(code, "priority") == [], code
