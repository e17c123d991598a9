"""Parsing real-looking model answers into programs, or into failures with reasons."""

from __future__ import annotations

import ast

import pytest

from retune.search.llm.parse import ParseOutcome, check_program, find_diff_blocks, parse_answer

PARENT = '''\
"""Eviction priority: lowest is evicted first."""

RECENCY = 1.0


def priority(key, now, last_access, hits, size, evictions, last_evicted):
    age = now - last_access
    score = hits / (1.0 + RECENCY * age)
    if size > 65536:
        score = score * 0.5
    return score
'''
ENTRY = "priority"
SIGNATURE = "priority(key, now, last_access, hits, size, evictions, last_evicted) -> float"


def parse(text: str, *, truncated: bool = False) -> ParseOutcome:
    outcome = parse_answer(
        text, parent_code=PARENT, entrypoint=ENTRY, signature=SIGNATURE, truncated=truncated
    )
    if outcome.code is not None:  # whatever is returned is a usable program
        assert outcome.failure is None
        assert check_program(outcome.code, ENTRY, SIGNATURE) is None
        ast.parse(outcome.code)
    else:
        assert outcome.failure
    return outcome


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE"


# -- diffs -------------------------------------------------------------------------------
def test_a_fenced_diff_with_prose_around_it_applies() -> None:
    answer = (
        "Scans push hot keys out. Weighting by hits more strongly should help:\n\n"
        "```python\n"
        + block(
            "    score = hits / (1.0 + RECENCY * age)",
            "    score = hits**1.5 / (1.0 + RECENCY * age)",
        )
        + "\n```\n\nThis keeps the signature unchanged."
    )
    outcome = parse(answer)
    assert outcome.code == PARENT.replace("hits / (1.0", "hits**1.5 / (1.0")
    assert outcome.summary == "1 of 1 diff blocks applied"


def test_several_blocks_apply_in_order() -> None:
    answer = "\n\n".join(
        [
            "Two changes:",
            block("RECENCY = 1.0", "RECENCY = 0.25"),
            block("        score = score * 0.5", "        score = score * 0.2"),
        ]
    )
    outcome = parse(answer)
    assert outcome.code is not None
    assert "RECENCY = 0.25" in outcome.code and "score * 0.2" in outcome.code


def test_a_block_indented_by_a_different_amount_still_applies() -> None:
    # The model dropped the function's indentation in both halves of the block.
    answer = block(
        "if size > 65536:\n    score = score * 0.5", "if size > 32768:\n    score = score * 0.25"
    )
    outcome = parse(answer)
    assert outcome.code is not None
    assert "    if size > 32768:\n        score = score * 0.25\n" in outcome.code


def test_trailing_whitespace_and_crlf_do_not_stop_a_block() -> None:
    answer = block("    age = now - last_access   ", "    age = max(0.0, now - last_access)")
    outcome = parse(answer.replace("\n", "\r\n"))
    assert outcome.code is not None and "max(0.0, now - last_access)" in outcome.code


def test_a_diff_that_matches_nothing_is_a_failure() -> None:
    outcome = parse(block("    score = hits / age", "    score = hits / (age + 1)"))
    assert outcome.reason == "diff_not_applied"


def test_blocks_that_match_are_kept_when_another_does_not() -> None:
    answer = block("RECENCY = 1.0", "RECENCY = 2.0") + "\n" + block("nothing like this", "x = 1")
    outcome = parse(answer)
    assert outcome.code is not None and "RECENCY = 2.0" in outcome.code
    assert outcome.summary == "1 of 2 diff blocks applied"


def test_an_unfinished_block_is_a_failure() -> None:
    answer = "Here is the fix:\n<<<<<<< SEARCH\nRECENCY = 1.0\n=======\nRECENCY ="
    assert parse(answer).reason == "partial_diff"
    assert parse(answer, truncated=True).reason == "truncated"


def test_complete_blocks_before_a_cut_are_still_used() -> None:
    answer = block("RECENCY = 1.0", "RECENCY = 3.0") + "\n\n<<<<<<< SEARCH\n    age = now"
    outcome = parse(answer, truncated=True)
    assert outcome.code is not None and "RECENCY = 3.0" in outcome.code
    assert "unfinished block ignored" in outcome.summary


def test_a_diff_that_breaks_the_syntax_is_never_returned() -> None:
    outcome = parse(block("    age = now - last_access", "    age = now - (last_access"))
    assert outcome.reason == "syntax"


def test_a_diff_that_renames_the_entrypoint_is_rejected() -> None:
    answer = block(
        "def priority(key, now, last_access, hits, size, evictions, last_evicted):",
        "def score(key, now, last_access, hits, size, evictions, last_evicted):",
    )
    assert parse(answer).reason == "missing_entrypoint"


def test_find_diff_blocks_tolerates_marker_lengths_and_inner_fences() -> None:
    text = "<<<<<<<< SEARCH\n```python\na = 1\n```\n========\n```python\na = 2\n```\n>>>>>>>> REPLACE\n"
    blocks, partial = find_diff_blocks(text)
    assert not partial
    assert [(b.search, b.replace) for b in blocks] == [(["a = 1"], ["a = 2"])]


# -- full programs -----------------------------------------------------------------------
NEW_PROGRAM = """\
def priority(key, now, last_access, hits, size, evictions, last_evicted):
    age = now - last_access
    frequency = hits / (1.0 + evictions)
    return frequency / (1.0 + age) - 1e-7 * size
"""


def test_a_full_program_in_a_fence_with_prose() -> None:
    answer = (
        "Let me take a frequency-based approach instead.\n\n"
        f"```python\n{NEW_PROGRAM}```\n\n"
        "Key changes:\n- frequency discounted by past evictions\n- a size penalty\n"
    )
    outcome = parse(answer)
    assert outcome.code == NEW_PROGRAM
    assert outcome.summary == "full program"


def test_the_last_usable_fence_wins_when_the_old_code_is_quoted_first() -> None:
    answer = (
        "The current code does this:\n```python\n    score = hits / (1.0 + RECENCY * age)\n```\n"
        f"A better version:\n```py\n{NEW_PROGRAM}```\n"
        "Usage example:\n```\npriority(1, 2.0, 1.0, 3, 100, 0, 0.0)\n```\n"
    )
    assert parse(answer).code == NEW_PROGRAM


def test_a_program_cut_off_at_the_output_limit_is_rejected() -> None:
    cut = NEW_PROGRAM.split("    return")[0]  # still parses, but has lost its return
    answer = f"Here's the rewrite:\n\n```python\n{cut}"
    assert parse(answer, truncated=True).reason == "truncated"


def test_an_unclosed_fence_at_the_end_of_a_finished_answer_is_accepted() -> None:
    assert parse(f"Here you go:\n```python\n{NEW_PROGRAM}").code == NEW_PROGRAM


def test_a_bare_program_with_prose_before_and_after() -> None:
    answer = f"Sure! Here is my answer.\n\n{NEW_PROGRAM}\nThis should improve the hit ratio."
    assert parse(answer).code == NEW_PROGRAM


def test_prose_without_code_is_a_failure() -> None:
    answer = "Great question! The best eviction policy depends on your workload. Consider LRU."
    assert parse(answer).reason == "no_code"
    assert parse("   \n").reason == "empty"


def test_a_program_that_does_not_parse_is_a_failure() -> None:
    answer = "```python\ndef priority(key, now, last_access, hits, size, evictions, last_evicted)\n    return 1\n```"
    outcome = parse(answer)
    assert outcome.reason == "syntax" and "line 1" in (outcome.failure or "")


def test_a_program_without_the_entrypoint_is_a_failure() -> None:
    answer = "```python\ndef score(a, b):\n    return a - b\n```"
    assert parse(answer).reason == "missing_entrypoint"


def test_a_program_with_the_wrong_arity_is_a_failure() -> None:
    answer = "```python\ndef priority(key, now):\n    return now\n```"
    assert parse(answer).reason == "signature"


@pytest.mark.parametrize(
    "definition",
    [
        "def priority(key, now, last_access, hits, size, evictions, last_evicted, bias=0.0):",
        "def priority(*args):",
    ],
)
def test_a_compatible_signature_is_accepted(definition: str) -> None:
    answer = f"```python\n{definition}\n    return 1.0\n```"
    assert parse(answer).code is not None


def test_repeating_the_parent_is_a_failure() -> None:
    answer = f"I think the current program is already good:\n```python\n{PARENT}```"
    assert parse(answer).reason == "unchanged"


def test_a_diff_fence_of_another_format_is_not_mistaken_for_code() -> None:
    answer = "```diff\n-RECENCY = 1.0\n+RECENCY = 2.0\n```"
    assert parse(answer).reason in {"no_code", "syntax"}


def test_a_free_form_signature_skips_the_arity_check() -> None:
    code = "def priority(a):\n    return a\n"
    assert check_program(code, ENTRY, "priority: takes an entry, returns a float") is None
