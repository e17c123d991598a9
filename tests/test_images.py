"""The images `make images` builds: their Dockerfiles, the build script, and the archives.

The static tests need no builder. The tests marked ``images`` inspect what ``make images``
(a prerequisite of ``make test``) left in the cache: each archive's configuration and
files, and the operator, evaluator and cache workload run from their unpacked root
filesystems the way a node runs them: as user 65532, on a read-only root, with /tmp the
only writable place (``unshare`` + ``chroot``, as root).
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from retune.evaluate.contract import EvaluationTask
from retune.evaluate.entrypoint import EvaluationBatch, decode_outcomes
from retune.evaluate.loader import load_evaluator
from retune.spec import load_target
from retune.spec.evaluator import DEFAULT_EVALUATOR_PATH
from tests.test_evaluator_images import arguments, env_of, example_context, hadolint

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "images" / "build"
OPERATOR = ROOT / "Dockerfile"
CACHE_IMAGE = ROOT / "examples" / "01-cache-eviction" / "workload" / "Dockerfile"
PAUSE = ROOT / "images" / "pause"
EXAMPLE_01 = ROOT / "examples" / "01-cache-eviction"
DOCKERFILES = [
    OPERATOR, CACHE_IMAGE, PAUSE / "Dockerfile", *sorted((ROOT / "evaluator-images").glob("*/Dockerfile")),
]  # fmt: skip
USER = "65532:65532"


def build_script() -> ModuleType:
    """images/build as a module (it is a script without a .py suffix)."""
    loader = importlib.machinery.SourceFileLoader("retune_images_build", str(BUILD))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


def app_version() -> str:
    match = re.search(
        r'^appVersion:\s*"?([^"\s]+)', (ROOT / "charts/retune/Chart.yaml").read_text(), re.M
    )
    assert match is not None
    return match.group(1)


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    """The instructions after the last FROM."""
    from tests.test_evaluator_images import instructions

    pairs = instructions(dockerfile)
    last = max(i for i, (kind, _) in enumerate(pairs) if kind == "FROM")
    return pairs[last:]


# --- static: the Dockerfiles -------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES[:3], ids=["operator", "cache", "pause"])
def test_hadolint_passes(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_dockerfile_builds_on_the_official_python_image_and_on_the_debian_made_one(
    dockerfile: Path,
) -> None:
    # Debian's python3 has no `python` without python-is-python3, and lives under /usr:
    # a venv made with `python3 -m venv` and paths asked of the interpreter fit both.
    text = dockerfile.read_text()
    assert "/usr/local/" not in text
    assert not re.search(r"\bpython -m\b", text)
    for rest in arguments(dockerfile, "ARG"):
        if rest.startswith("PYTHON_IMAGE="):
            assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm", rest)


def test_the_operator_image_is_scratch_non_root_and_runs_what_the_chart_runs() -> None:
    final = final_stage(OPERATOR)
    assert final[0] == ("FROM", "scratch")
    assert [kind for kind, _ in final if kind == "RUN"] == []  # nothing to run a RUN with
    assert arguments(OPERATOR, "USER")[-1] == USER
    entrypoint = json.loads(arguments(OPERATOR, "ENTRYPOINT")[-1])
    assert entrypoint == ["retune", "operator"]
    deployment = (ROOT / "charts/retune/templates/deployment.yaml").read_text()
    assert f"command: {json.dumps(entrypoint)}" in deployment
    assert "mountPath: /tmp" in deployment
    # the container's securityContext is a value (overridable); its default is read-only
    values = yaml.safe_load((ROOT / "charts/retune/values.yaml").read_text())
    assert values["securityContext"]["readOnlyRootFilesystem"] is True
    env = env_of(OPERATOR)
    assert env["PATH"] == "/opt/retune/venv/bin"  # where `retune` is: no shell to find it
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == env["TMPDIR"] == "/tmp"


def test_the_operator_image_installs_exactly_the_lock() -> None:
    # The lock is the image's list: tests/test_dependencies.py checks it against
    # pyproject.toml, so the two cannot disagree.
    runs = [" ".join(rest.split()) for rest in arguments(OPERATOR, "RUN")]
    assert any(
        "pip install --no-cache-dir --no-deps --require-hashes --requirement requirements.lock"
        in run
        for run in runs
    ), runs
    assert any("pip install --no-cache-dir --no-deps ." in run for run in runs), runs
    assert "requirements.lock ./requirements.lock" in arguments(OPERATOR, "COPY")
    assert "!requirements.lock" in (ROOT / "Dockerfile.dockerignore").read_text().splitlines()


def test_the_cache_image_copies_every_module_its_scripts_import() -> None:
    copied = {
        Path(source).name
        for rest in arguments(CACHE_IMAGE, "COPY")
        if "--from" not in rest
        for source in rest.split()[:-1]
    }
    third_party: set[str] = set()
    for script in ("server.py", "loadgen.py"):
        for name in _imports(EXAMPLE_01 / "workload" / script, set()):
            local = [EXAMPLE_01 / "workload" / f"{name}.py", EXAMPLE_01 / f"{name}.py"]
            if any(path.is_file() for path in local):
                assert f"{name}.py" in copied, f"{script} imports {name}, not copied"
            elif name not in sys.stdlib_module_names:
                third_party.add(name)
    requirements = (EXAMPLE_01 / "workload" / "requirements.txt").read_text()
    for name in third_party - {"retune"}:
        assert name.replace("_", "-") in requirements, name
    assert json.loads(arguments(CACHE_IMAGE, "CMD")[-1])[:2] == [
        "python", "/app/examples/01-cache-eviction/workload/server.py",
    ]  # fmt: skip
    assert arguments(CACHE_IMAGE, "USER")[-1] == USER


def _imports(path: Path, seen: set[str]) -> set[str]:
    """Top-level module names ``path`` imports, following the example's own modules."""
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module.split(".")[0]]
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            for local in (EXAMPLE_01 / "workload" / f"{name}.py", EXAMPLE_01 / f"{name}.py"):
                if local.is_file():
                    _imports(local, seen)
    return seen


# --- static: the build script ------------------------------------------------------------


def test_every_image_is_tagged_with_the_chart_app_version() -> None:
    listing = subprocess.run([str(BUILD), "--list"], capture_output=True, text=True, check=True)
    references = {line.split("\t")[0]: line.split("\t")[1] for line in listing.stdout.splitlines()}
    version = app_version()
    assert references == {
        "python": "localhost/retune/python:3.11-bookworm",
        "operator": f"ghcr.io/retune/operator:{version}",
        "evaluator-base": f"ghcr.io/retune/evaluator-base:{version}",
        "evaluator-cache-eviction": f"ghcr.io/retune/evaluator-cache-eviction:{version}",
        "evaluator-request-routing": f"ghcr.io/retune/evaluator-request-routing:{version}",
        "evaluator-test": f"ghcr.io/retune/evaluator-test:{version}",
        "cache": f"ghcr.io/retune/cache:{version}",
        "pause": "retune.dev/pause:1",
    }
    values = (ROOT / "charts/retune/values.yaml").read_text()
    assert "repository: ghcr.io/retune/operator" in values
    for example in ("01-cache-eviction", "02-request-routing"):
        image = load_target(ROOT / "examples" / example / "target.yaml").spec.evaluator.image
        assert image in references.values()


def test_the_content_hash_covers_every_file_a_build_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = build_script()
    operator = build.BY_NAME["operator"]
    files = build.input_files(operator)
    assert {"Dockerfile", "pyproject.toml", "operator/retune/cli.py"} <= set(files)
    assert "images/operator/rootfs.py" in files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    for path in files:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, tmp_path / path)
    monkeypatch.setattr(build, "ROOT", tmp_path)
    parents = {"python": "sha256:base"}
    before = build.content_hash(operator, "0.1.0", parents)
    assert build.content_hash(operator, "0.1.0", parents) == before
    assert build.content_hash(operator, "0.2.0", parents) != before
    assert build.content_hash(operator, "0.1.0", {"python": "sha256:new-base"}) != before
    (tmp_path / "operator/retune/cli.py").write_text("# changed\n")
    assert build.content_hash(operator, "0.1.0", parents) != before


def test_the_pause_program_exits_zero_on_sigterm_and_reaps_children(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is missing (images/install-tools installs it)")
    binary = tmp_path / "pause"
    subprocess.run(
        ["gcc", "-static", "-Os", "-Wall", "-Werror", "-o", binary, PAUSE / "pause.c"], check=True
    )
    # As a subreaper's stand-in: a child of pause that exits must not stay a zombie.
    process = subprocess.Popen([binary], stderr=subprocess.PIPE)
    time.sleep(0.2)
    assert process.poll() is None
    process.terminate()
    assert process.wait(timeout=5) == 0
    process = subprocess.Popen([binary], stderr=subprocess.PIPE)
    time.sleep(0.2)
    process.send_signal(2)
    assert process.wait(timeout=5) == 0


# --- the built images --------------------------------------------------------------------


def cache_directory() -> Path:
    return Path(os.environ.get("RETUNE_IMAGE_CACHE") or Path.home() / ".cache" / "retune-images")


def read_manifest() -> dict[str, Any]:
    path = cache_directory() / "manifest.json"
    if not path.is_file():
        pytest.fail(f"no {path}: run `make images` (a prerequisite of make test)", pytrace=False)
    return dict(json.loads(path.read_text()))


@pytest.fixture
def manifest() -> dict[str, Any]:
    """The manifest as it is now (a build in an earlier test may have rewritten it)."""
    return read_manifest()


def archive_of(manifest: dict[str, Any], name: str) -> tuple[str, Path]:
    for reference, entry in manifest["images"].items():
        if entry["name"] == name:
            return reference, Path(entry["archive"])
    raise AssertionError(f"{name} is not in the manifest: {sorted(manifest['images'])}")


def read_archive(archive: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A docker-archive's manifest entry and image configuration."""
    with tarfile.open(archive) as tar:
        entries = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert len(entries) == 1
        config = json.load(tar.extractfile(entries[0]["Config"]))  # type: ignore[arg-type]
    return entries[0], config


def unpack(archive: Path, directory: Path) -> Path:
    """The image's root filesystem: its layers applied in order, whiteouts honoured."""
    entry, _ = read_archive(archive)
    directory.mkdir(parents=True)
    with tarfile.open(archive) as outer:
        for layer_name in entry["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer_name)) as layer:
                members = []
                for member in layer.getmembers():
                    path = Path(member.name)
                    if path.name == ".wh..wh..opq":
                        for child in (directory / path.parent).glob("*"):
                            shutil.rmtree(
                                child
                            ) if child.is_dir() and not child.is_symlink() else child.unlink()
                    elif path.name.startswith(".wh."):
                        gone = directory / path.parent / path.name.removeprefix(".wh.")
                        if gone.is_dir() and not gone.is_symlink():
                            shutil.rmtree(gone)
                        elif gone.exists() or gone.is_symlink():
                            gone.unlink()
                    else:
                        members.append(member)
                layer.extractall(directory, members=members, numeric_owner=True, filter="tar")
    return directory


def in_image(rootfs: Path, argv: list[str], env: dict[str, str], tmp: Path) -> list[str]:
    """The command that runs ``argv`` as user 65532 in ``rootfs`` with only the image's
    environment: the root read-only, ``tmp`` at /tmp (the pods' emptyDir), /dev and /proc
    provided, as a runtime does."""
    chroot, unshare = shutil.which("chroot"), shutil.which("unshare")
    if os.geteuid() != 0 or chroot is None or unshare is None:
        pytest.skip("running an image's root filesystem needs root, chroot and unshare")
    tmp.chmod(0o1777)
    script = (
        'set -e; mkdir -p "$1/dev" "$1/proc" "$1/tmp"; mount --bind "$1" "$1";'
        ' mount --rbind /dev "$1/dev"; mount -t proc proc "$1/proc"; mount --bind "$2" "$1/tmp";'
        ' mount -o remount,bind,ro "$1" "$1"; shift 2; exec "$@"'
    )
    command = [unshare, "--mount", "--fork", "/bin/sh", "-c", script, "sh", str(rootfs), str(tmp)]
    command += ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items())]
    return [*command, chroot, "--userspec=65532:65532", str(rootfs), *argv]


def run_in(
    rootfs: Path, argv: list[str], env: dict[str, str], tmp: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``argv`` run to its end in the image (see ``in_image``)."""
    command = in_image(rootfs, argv, env, tmp)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def image_env(config: dict[str, Any]) -> dict[str, str]:
    """The environment an image's configuration (its "config" part) sets."""
    return dict(item.split("=", 1) for item in config.get("Env", []))


def unpacked(manifest: dict[str, Any], name: str, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """An image's configuration and its root filesystem, unpacked under ``tmp_path``."""
    _, archive = archive_of(manifest, name)
    return read_archive(archive)[1]["config"], unpack(archive, tmp_path / "rootfs")


@pytest.fixture(scope="module")
def operator_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, archive = archive_of(read_manifest(), "operator")
    return unpack(archive, tmp_path_factory.mktemp("operator") / "rootfs")


@pytest.mark.images
def test_every_archive_holds_its_reference_tagged_with_the_app_version(
    manifest: dict[str, Any],
) -> None:
    version = app_version()
    assert manifest["appVersion"] == version
    names = {entry["name"] for entry in manifest["images"].values()}
    assert names == {
        "operator", "evaluator-base", "evaluator-cache-eviction", "evaluator-request-routing",
        "evaluator-test", "cache", "pause",
    }  # fmt: skip
    for reference, entry in manifest["images"].items():
        if entry["name"] != "pause":
            assert reference.endswith(f":{version}"), reference
        archive = Path(entry["archive"])
        assert archive.stat().st_size == entry["size"]
        assert read_archive(archive)[0]["RepoTags"] == [reference]


@pytest.mark.images
def test_the_operator_image_has_no_shell_no_package_manager_and_runs_as_65532(
    manifest: dict[str, Any], operator_rootfs: Path
) -> None:
    _, archive = archive_of(manifest, "operator")
    entry, config = read_archive(archive)
    assert len(entry["Layers"]) == 1  # FROM scratch, one COPY
    assert config["config"]["User"] == USER
    assert config["config"]["Entrypoint"] == ["retune", "operator"]
    found = [
        str(path.relative_to(operator_rootfs))
        for path in operator_rootfs.rglob("*")
        if re.fullmatch(
            r"(sh|bash|dash|busybox|pip\d*(\.\d+)?|apt(-get)?|dpkg|ensurepip)", path.name
        )
    ]
    assert found == []
    passwd = (operator_rootfs / "etc/passwd").read_text()
    assert re.search(r"^\w+:x:65532:65532:", passwd, re.M)
    assert (operator_rootfs / "etc/ssl/certs/ca-certificates.crt").stat().st_size > 10_000


@pytest.mark.images
def test_retune_runs_in_the_operator_image_on_a_read_only_root(
    manifest: dict[str, Any], operator_rootfs: Path, tmp_path: Path
) -> None:
    _, archive = archive_of(manifest, "operator")
    env = image_env(read_archive(archive)[1]["config"])
    retune = f"{env['PATH']}/retune"
    result = run_in(operator_rootfs, [retune, "--help"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "operator" in result.stdout
    # Everything the operator imports loads, with nowhere to write but /tmp.
    code = "import retune.handlers.operator, kopf, kubernetes, openai, ssl; print('imported')"
    result = run_in(operator_rootfs, [f"{env['PATH']}/python3", "-c", code], env, tmp_path)
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr
    assert list(tmp_path.iterdir()) == []  # and it did not need /tmp either


@pytest.mark.images
def test_the_operator_starts_on_a_read_only_root_and_stops_on_sigterm(
    operator_rootfs: Path, tmp_path: Path
) -> None:
    import socket
    import urllib.request

    env = image_env(read_archive(archive_of(read_manifest(), "operator")[1])[1]["config"])
    # An API server that refuses connections: the operator must still come up and serve
    # its health endpoint, with nowhere to write but /tmp.
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    (tmp_path / "kubeconfig").chmod(0o644)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["retune", "operator", "--all-namespaces", "--kubeconfig", "/tmp/kubeconfig"]
    argv += [f"--metrics-port={port}"]
    process = subprocess.Popen(
        in_image(operator_rootfs, argv, env, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline, answer = time.monotonic() + 60, ""
        while time.monotonic() < deadline and process.poll() is None and not answer:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    answer = r.read().decode()
            except OSError:
                time.sleep(0.3)
        assert answer, f"no /healthz answer; exit {process.poll()}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Traceback" not in output and "Read-only file system" not in output, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kubeconfig"]


@pytest.mark.images
def test_the_evaluator_image_scores_a_batch_as_an_evaluation_pod_does(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    config, rootfs = unpacked(manifest, "evaluator-cache-eviction", tmp_path)
    assert config["User"] == USER and config["Entrypoint"] == ["retune-evaluate"]
    target = load_target(EXAMPLE_01 / "target.yaml")
    context = example_context(EXAMPLE_01)
    seed = (EXAMPLE_01 / "seed_policy.py").read_text()
    batch = EvaluationBatch(
        evaluator=DEFAULT_EVALUATOR_PATH,
        entrypoint=target.spec.policy.entrypoint,
        tasks=[EvaluationTask(task_id="seed", policy_code=seed, context=context, subset="quick")],
    )
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp / "batch.json").write_text(batch.model_dump_json())
    (tmp / "batch.json").chmod(0o644)
    command = ["retune-evaluate", "--batch", "/tmp/batch.json", "--output", "/tmp/outcomes"]
    result = run_in(rootfs, command, image_env(config), tmp, timeout=300)
    assert result.returncode == 0, result.stderr
    outcome = decode_outcomes((tmp / "outcomes").read_text(), ["seed"])["seed"]
    assert outcome.ok and outcome.result is not None, outcome
    expected = load_evaluator(EXAMPLE_01 / "evaluator.py").evaluate(
        str(EXAMPLE_01 / "seed_policy.py"), context.model_dump(), "quick"
    )
    assert math.isfinite(outcome.result.score)
    assert outcome.result.score == pytest.approx(expected["score"], rel=1e-5)
    printed = decode_outcomes(result.stdout.strip(), ["seed"])["seed"]  # stdout has it too
    assert printed.result is not None and printed.result.score == outcome.result.score


@pytest.mark.images
def test_the_cache_image_runs_the_service_and_the_load_generator(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    config, rootfs = unpacked(manifest, "cache", tmp_path)
    assert config["User"] == USER
    env = image_env(config)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    for script in ("server.py", "loadgen.py"):
        path = f"/app/examples/01-cache-eviction/workload/{script}"
        result = run_in(rootfs, ["python", path, "--help"], env, tmp)
        assert result.returncode == 0, result.stderr
        assert "usage" in result.stdout


@pytest.mark.images
def test_the_pause_image_is_one_static_binary(manifest: dict[str, Any]) -> None:
    _, archive = archive_of(manifest, "pause")
    entry, config = read_archive(archive)
    assert config["config"]["Entrypoint"] == ["/pause"]
    with (
        tarfile.open(archive) as outer,
        tarfile.open(fileobj=outer.extractfile(entry["Layers"][0])) as layer,
    ):
        files = [m.name.lstrip("./") for m in layer.getmembers() if m.isfile()]
    assert files == ["pause"], files


@pytest.mark.images
def test_a_second_build_with_no_change_rebuilds_nothing() -> None:
    # Run last: it may rebuild what changed since `make images`. The tree can be edited
    # while the suite runs, so a build that had something to do is followed by another,
    # a few times; with nothing changed in between, a run builds nothing, in seconds.
    system_cache_before = Path("/var/lib/containers").exists()
    for _ in range(3):
        started = time.monotonic()
        result = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=1800)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        if " building " not in result.stdout:
            break
    assert " building " not in result.stdout, result.stdout
    manifest = read_manifest()
    assert result.stdout.count("up to date") == len(manifest["images"]) + len(manifest["base"])
    assert elapsed < 60, f"an up-to-date build took {elapsed:.0f} s"
    # buildah's storage and everything else stay in the cache directory.
    assert Path("/var/lib/containers").exists() == system_cache_before
    check = subprocess.run([str(BUILD), "--check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout
