"""`retune check` and `retune run` refuse the same targets and options, with the same
words, before anything starts; model tiers come from the spec or `--model`, never from a
guess."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from retune.cli import EXIT_USAGE, main
from retune.local.tiers import TierOption, parse_tier_option, resolve_tiers
from retune.spec import ModelTier, Pricing

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "01-cache-eviction"


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A copy of examples/01 that a test may break."""
    copy = tmp_path / "target"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("workload", "baselines*"))
    return copy / "target.yaml"


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new))


def outcome(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    """The exit code and stderr lines of ``retune ARGV``."""
    code = main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


def break_seed(target: Path) -> str:
    (target.parent / "seed_policy.py").write_text(
        "import os\n\ndef priority(size, now, last_access, access_count, insert_time, "
        "evicted_count, last_evicted):\n    return os.getpid()\n"
    )
    return "spec.policy.seed.file: the seed program is refused by the sandbox's allowlist"


def break_profile(target: Path) -> str:
    replace(target, "    recorded: profile.json\n", "")
    return "spec.profile: the evaluator's profile comes from spec.profile.queries"


def break_evaluator(target: Path) -> str:
    replace(target.parent / "evaluator.py", "def evaluate(", "def evaluate_all(")
    return "spec.evaluator.module:"


def break_tier_key(target: Path) -> str:
    replace(
        target,
        "    mutator: builtin\n",
        "    mutator: llm\n"
        "    models:\n"
        "      - name: cheap\n"
        "        baseUrl: http://127.0.0.1:9/v1\n"
        "        model: m\n"
        "        apiKey: {env: RETUNE_TEST_UNSET_KEY}\n"
        "        pricing: {inputPerMillion: 1, outputPerMillion: 2}\n",
    )
    return "spec.search.models[0].apiKey: no API key for tier 'cheap'"


BREAKAGES: dict[str, Callable[[Path], str]] = {
    "seed refused by the allowlist": break_seed,
    "profile queries with nowhere to read them": break_profile,
    "evaluator without evaluate()": break_evaluator,
    "model tier without its key": break_tier_key,
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_check_and_run_refuse_the_same_target_with_the_same_words(
    breakage: str, target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = BREAKAGES[breakage](target)
    output = ["--output", str(tmp_path / "out"), "--quiet"]
    check_code, check_err = outcome(capsys, "check", str(target), *output)
    run_code, run_err = outcome(capsys, "run", str(target), *output)

    assert check_code == run_code == EXIT_USAGE
    assert check_err == run_err
    assert any(expected in line for line in check_err), check_err
    assert not (tmp_path / "out").exists(), "run must refuse before it starts"


def test_a_problem_free_target_is_ready_for_check(
    target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", str(target), "--output", str(tmp_path / "out")])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert "ready to run" in out[0]
    # what the cluster would refuse is noted, not counted against a local run
    assert out[1:] == [
        "  in a cluster: spec.policy.seed.file: a file cannot be read in the cluster; use "
        "inline or configMapRef (`retune manifest` inlines it)"
    ]


def test_every_problem_is_reported_at_once(
    target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = [break_seed(target), break_profile(target)]
    code, err = outcome(capsys, "check", str(target), "--output", str(tmp_path / "o"))
    assert code == EXIT_USAGE
    for words in expected:
        assert any(words in line for line in err), err


def test_an_existing_output_needs_resume_in_check_as_in_run(
    target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "checkpoint.retune").write_bytes(b"x")
    check = outcome(capsys, "check", str(target), "--output", str(output))
    run = outcome(capsys, "run", str(target), "--output", str(output))
    assert check == run
    assert check[0] == EXIT_USAGE and "--resume" in check[1][0]
    assert main(["check", str(target), "--output", str(output), "--resume"]) == 0


def test_a_base_url_with_no_tier_anywhere_names_what_to_set(
    target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(target), "--llm-base-url", "http://127.0.0.1:9/v1", "--output", str(tmp_path)]
    for command in ("check", "run"):
        code, err = outcome(capsys, command, *args)
        assert code == EXIT_USAGE
        assert len(err) == 1 and "--llm-base-url: no model tier is configured" in err[0]
        assert "--model cheap=" in err[0] and "spec.search.models" in err[0]
        assert "small" not in err[0] and "large" not in err[0]


def test_model_options_give_the_tiers_their_names_roles_and_prices(
    target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "check", str(target), "--output", str(tmp_path),
            "--llm-base-url", "http://127.0.0.1:9/v1",
            "--model", "cheap=org/coder-7b@0.1/0.3", "--model", "strong=coder-32b@0.8/2.4",
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "mutator llm" in out
    assert "org-coder-7b (mutate)" in out and "coder-32b (paradigm)" in out


@pytest.mark.parametrize(
    "text",
    ["cheap=m", "cheap=m@1", "cheap=m@x/1", "cheap=m@-1/1", "weak=m@1/1", "m@1/1", "cheap=m@nan/1"],
)
def test_a_malformed_model_option_is_a_usage_error(
    text: str, target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(target), "--model", text])
    assert exit_info.value.code == EXIT_USAGE
    assert "--model" in capsys.readouterr().err


def test_a_negative_free_start_is_a_usage_error_and_zero_is_taken(
    target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(target), "--free-start", "-1"])
    assert exit_info.value.code == EXIT_USAGE
    assert "--free-start: must be >= 0, got -1" in capsys.readouterr().err
    assert outcome(capsys, "check", str(target), "--free-start", "0")[0] == 0


def test_a_model_option_without_an_endpoint_or_a_cheap_tier_is_refused(
    target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = outcome(capsys, "check", str(target), "--model", "strong=big@1/2")
    assert code == EXIT_USAGE
    assert any("needs --llm-base-url" in line for line in err)
    assert any("--model cheap=NAME@IN/OUT" in line for line in err)


def spec_tier(name: str, role: str) -> ModelTier:
    return ModelTier.model_validate(
        {
            "name": name,
            "role": role,
            "baseUrl": "https://spec.example/v1",
            "model": name,
            "pricing": Pricing(input_per_million=1, output_per_million=2),
        }
    )


def test_a_model_option_replaces_the_spec_tiers_of_its_role_only() -> None:
    configured = [spec_tier("a", "mutate"), spec_tier("b", "paradigm")]
    option = parse_tier_option("cheap=c@0.5/1.5")
    tiers, problems = resolve_tiers(
        configured, [option], base_url="http://local/v1", api_key_env="KEY"
    )
    assert problems == []
    assert [(t.name, t.role) for t in tiers] == [("b", "paradigm"), ("c", "mutate")]
    assert {t.base_url for t in tiers} == {"http://local/v1"}
    added = tiers[1]
    assert added.pricing.per_million() == (0.5, 1.5)
    assert added.api_key is not None and added.api_key.env == "KEY"


def test_two_roles_on_one_model_get_distinct_tier_names() -> None:
    options = [TierOption("mutate", "m", 1, 2), TierOption("paradigm", "m", 1, 2)]
    tiers, problems = resolve_tiers([], options, base_url="http://local/v1", api_key_env=None)
    assert problems == []
    assert [t.name for t in tiers] == ["m-mutate", "m-paradigm"]


def test_a_parameters_policy_whose_seed_does_not_hold_its_parameters_is_refused(
    target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    replace(
        target,
        "    kind: code\n",
        "    kind: parameters\n    parameters:\n      - {name: RECENCY_WEIGHT, min: 0, max: 10}\n",
    )
    code, lines = outcome(capsys, "check", str(target))
    assert code == EXIT_USAGE
    assert any(
        "spec.policy.seed.file: the seed program does not hold its declared parameters: "
        "parameter 'RECENCY_WEIGHT' is not assigned at module level" in line
        for line in lines
    ), lines
