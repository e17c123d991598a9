"""Bad input is a message: each of these ends `retune check`/`retune run` with a non-zero
exit and a one-line message naming the file or field, no traceback, within 10 s."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "01-cache-eviction"


def laughs(target: Path) -> list[str]:
    """Ten aliases of ten aliases ... (the "billion laughs"), in metadata.labels."""
    anchors = (
        "metadata:\n  name: cache-eviction\n  labels:\n    l0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    )
    for level in range(1, 10):
        anchors += f"    l{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]\n"
    text = target.read_text().replace("metadata:\n  name: cache-eviction\n", anchors)
    target.write_text(text)
    return ["check", str(target)]


def not_utf8(field: str, name: str) -> Callable[[Path], list[str]]:
    def breaks(target: Path) -> list[str]:
        (target.parent / name).write_bytes(b"\xff\xfe not text")
        return ["check", str(target)]

    breaks.__name__ = field
    return breaks


def evaluator_raises_on_import(target: Path) -> list[str]:
    evaluator = target.parent / "evaluator.py"
    evaluator.write_text('raise RuntimeError("no data set here")\n' + evaluator.read_text())
    return ["run", str(target), "--max-evaluations", "2"]


def evaluator_starts_with(line: str, timeout_seconds: int = 60) -> Callable[[Path], list[str]]:
    def breaks(target: Path) -> list[str]:
        evaluator = target.parent / "evaluator.py"
        future = "from __future__ import annotations\n"  # must stay first
        text = evaluator.read_text()
        evaluator.write_text(text.replace(future, future + line + "\n", 1))
        assert line in evaluator.read_text()
        text = target.read_text()
        assert "timeoutSeconds: 60" in text
        target.write_text(text.replace("timeoutSeconds: 60", f"timeoutSeconds: {timeout_seconds}"))
        return ["run", str(target), "--max-evaluations", "2"]

    return breaks


def seed_nested_deeply(target: Path) -> list[str]:
    seed = target.parent / "seed_policy.py"
    seed.write_text(seed.read_text() + "\n\ndef deep(x):\n    return " + "-" * 30000 + "x\n")
    return ["run", str(target), "--max-evaluations", "2"]


def checkpoint(content: bytes) -> Callable[[Path], list[str]]:
    def breaks(target: Path) -> list[str]:
        output = target.parent / "out"
        output.mkdir()
        (output / "checkpoint.retune").write_bytes(content)
        return ["run", str(target), "--output", str(output), "--resume"]

    return breaks


def resume_with_nothing(target: Path) -> list[str]:
    return ["run", str(target), "--output", str(target.parent / "none"), "--resume"]


def output_under_a_file(target: Path) -> list[str]:
    (target.parent / "file").write_text("")
    return ["run", str(target), "--output", str(target.parent / "file" / "out")]


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "nested aliases": (laughs, "aliases are expanded"),
    "seed not UTF-8": (not_utf8("seed", "seed_policy.py"), "spec.policy.seed.file"),
    "profile not UTF-8": (not_utf8("profile", "profile.json"), "spec.profile.recorded"),
    "evaluator not UTF-8": (not_utf8("evaluator", "evaluator.py"), "spec.evaluator.module"),
    "evaluator raises on import": (evaluator_raises_on_import, "spec.evaluator.module"),
    "evaluator hangs on import": (
        evaluator_starts_with("import time; time.sleep(3600)", timeout_seconds=3),
        "took longer than 3 s",
    ),
    "evaluator exits on import": (evaluator_starts_with("raise SystemExit(4)"), "exit status 4"),
    "evaluator ends its process on import": (
        evaluator_starts_with("import os; os._exit(0)"),
        "ended its process while it was imported",
    ),
    "seed nested deeply enough to exhaust memory": (seed_nested_deeply, "spec.policy.seed.file"),
    "empty checkpoint": (checkpoint(b""), "checkpoint"),
    "random checkpoint": (checkpoint(os.urandom(300)), "checkpoint"),
    "truncated checkpoint": (checkpoint(zlib.compress(b'{"version": 1, "arch')[:12]), "checkpoint"),
    "checkpoint of another shape": (checkpoint(zlib.compress(b"[1, 2, 3]")), "checkpoint"),
    "checkpoint of another version": (checkpoint(zlib.compress(b'{"version": 999}')), "checkpoint"),
    "resume with nothing to resume": (resume_with_nothing, "--resume"),
    "output under a file": (output_under_a_file, "--output"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_a_one_line_message(case: str, tmp_path: Path) -> None:
    copy = tmp_path / "target"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("workload", "baselines*"))
    breaks, words = CASES[case]
    argv = breaks(copy / "target.yaml")
    if argv[0] == "run":
        argv += ["--quiet"] if "--output" in argv else ["--quiet", "--output", str(tmp_path / "o")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "retune.cli", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    took = time.monotonic() - started
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode != 0, completed.stdout
    assert "Traceback" not in completed.stderr, completed.stderr
    assert len(lines) == 1, lines
    assert words in lines[0]
    assert took < 10


def test_a_program_too_deep_to_parse_still_hashes() -> None:
    # The parser runs out of memory on it; dedup must not crash the search.
    from retune.search.program import normalised_hash, structural_features

    deep = "def choose(x):\n    return " + "-" * 30000 + "x\n"
    assert normalised_hash(deep) != normalised_hash(deep + " ")
    assert set(structural_features(deep).values()) == {0.0}
