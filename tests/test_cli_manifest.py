"""`retune manifest`: a target written for `retune run` printed as the cluster takes it --
the seed file inlined, everything else as written -- or refused with the field to change.
(`tests/cluster/test_controlplane.py` applies its output to a real API server.)"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from retune.cli import EXIT_OK, EXIT_USAGE, main
from retune.spec import cluster_problems, parse_target

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [ROOT / "examples" / name for name in ("01-cache-eviction", "02-request-routing")]


def manifest(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    code = main(["manifest", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_an_example_comes_out_with_its_seed_inline_and_nothing_else_changed(
    capsys: pytest.CaptureFixture[str], example: Path
) -> None:
    code, out, err = manifest(capsys, str(example / "target.yaml"))
    assert (code, err) == (EXIT_OK, [])
    printed: dict[str, Any] = yaml.safe_load(out)
    written: dict[str, Any] = yaml.safe_load((example / "target.yaml").read_text())
    seed = printed["spec"]["policy"].pop("seed")
    assert seed == {"inline": (example / "seed_policy.py").read_text()}  # byte for byte
    written["spec"]["policy"].pop("seed")
    assert printed == written
    target = parse_target(yaml.safe_load(out), "printed")
    assert cluster_problems(target) == []
    assert "      inline: |\n" in out  # the program reads as a program


def test_the_namespace_is_set_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = manifest(capsys, str(EXAMPLES[0] / "target.yaml"), "-n", "shop")
    assert code == EXIT_OK
    assert yaml.safe_load(out)["metadata"] == {"name": "cache-eviction", "namespace": "shop"}


def test_a_target_without_an_evaluator_image_is_refused_for_the_cluster(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the benchmark's autoscaling problem runs locally only: no image
    target = ROOT / "bench" / "problems" / "03-autoscaling" / "target.yaml"
    code, out, err = manifest(capsys, str(target))
    assert (code, out) == (EXIT_USAGE, "")
    assert err == [
        f"{target}: spec.evaluator.image: required in the cluster (module is only used in local mode)"
    ]


def test_a_target_retune_check_refuses_is_refused_alike(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    copy = tmp_path / "target"
    shutil.copytree(EXAMPLES[0], copy, ignore=shutil.ignore_patterns("workload", "baselines*"))
    (copy / "seed_policy.py").unlink()
    code, out, err = manifest(capsys, str(copy / "target.yaml"))
    assert (code, out) == (EXIT_USAGE, "")
    assert len(err) == 1 and "spec.policy.seed.file: file not found" in err[0]
    assert main(["check", str(copy / "target.yaml")]) == EXIT_USAGE


def test_a_seed_already_inline_or_in_a_config_map_is_kept(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    copy = tmp_path / "target"
    shutil.copytree(EXAMPLES[0], copy, ignore=shutil.ignore_patterns("workload", "baselines*"))
    text = (copy / "target.yaml").read_text()
    by_ref = "seed: {configMapRef: {name: cache-seed, key: policy.py}}"
    (copy / "target.yaml").write_text(text.replace("seed: {file: seed_policy.py}", by_ref))
    code, out, _ = manifest(capsys, str(copy / "target.yaml"))
    assert code == EXIT_OK
    seed = yaml.safe_load(out)["spec"]["policy"]["seed"]
    assert seed == {"configMapRef": {"name": "cache-seed", "key": "policy.py"}}


def test_a_program_a_literal_block_cannot_hold_comes_out_exact(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    copy = tmp_path / "target"
    shutil.copytree(EXAMPLES[0], copy, ignore=shutil.ignore_patterns("workload", "baselines*"))
    program = (
        "def priority(size, now, last_access, access_count, insert_time, evicted_count,\n"
        "\tlast_evicted):  \n"  # a tab, and trailing spaces
        "    return last_access\n"
    )
    (copy / "seed_policy.py").write_text(program)
    code, out, _ = manifest(capsys, str(copy / "target.yaml"))
    assert code == EXIT_OK
    assert yaml.safe_load(out)["spec"]["policy"]["seed"] == {"inline": program}
