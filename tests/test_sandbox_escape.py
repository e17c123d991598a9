"""Escape attempts against the harness, each on two paths:

- the allowlist path: the policy as a user would submit it; the static check refuses it;
- the runtime path: the allowlist is switched off (tests only) and the policy climbs out
  of its restricted builtins to the ``os`` module, so only the process confinement
  (rlimits, uid 65534, network namespace, Landlock, closed descriptors, cleared
  environment) stands between it and the machine.

Each test asserts a failed candidate with a sensible reason, that the harness keeps
working, and that the side effect did not happen.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from retune.evaluate.contract import (
    EvaluationContext,
    EvaluationOutcome,
    EvaluationTask,
    FailureReason,
    SandboxLimits,
)
from retune.evaluate.loader import load_evaluator
from retune.evaluate.sandbox import SandboxHarness

FIXTURES = Path(__file__).parent / "fixtures"
LIMITS = SandboxLimits(wall_seconds=5, cpu_seconds=5, memory_mb=256)
HONEST = "def choose(x):\n    return 2 * x + 1\n"

# How a policy gets out of its restricted builtins when the allowlist is off: through
# object's subclasses to a function defined in the os module, and its globals.
ESCAPE = """
def _os():
    for cls in ().__class__.__base__.__subclasses__():
        if cls.__name__ == "_wrap_close":
            return cls.__init__.__globals__
    raise ValueError("no way out")
"""


@pytest.fixture(scope="module")
def evaluator() -> ModuleType:
    return load_evaluator(FIXTURES / "scoring_evaluator.py")


@pytest.fixture(scope="module")
def layers(evaluator: ModuleType) -> dict[str, object]:
    """Which optional confinement layers this machine offers (see docs/sandbox.md)."""
    with SandboxHarness(evaluator, "choose", LIMITS) as harness:
        return harness.probe()


def requires(layers: dict[str, object], *needed: str) -> None:
    """Skip unless one of the layers that carries the next assertion is present."""
    present = {
        "nobody": layers.get("user") == "nobody",
        "landlock": bool(layers.get("landlock_abi")),
        "netns": layers.get("network") in ("namespace", "user namespace"),
    }
    if not any(present[name] for name in needed):
        pytest.skip(f"needs one of {needed}; this machine has {layers}")


@pytest.fixture
def guarded(evaluator: ModuleType) -> Iterator[SandboxHarness]:
    with SandboxHarness(evaluator, "choose", LIMITS) as harness:
        yield harness


@pytest.fixture
def exposed(evaluator: ModuleType) -> Iterator[SandboxHarness]:
    with SandboxHarness(evaluator, "choose", LIMITS, enforce_allowlist=False) as harness:
        yield harness


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A world-writable directory: uid 65534 alone would not stop a write here."""
    path = Path(tempfile.mkdtemp(prefix="retune-escape-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def submit(harness: SandboxHarness, code: str, **params: object) -> EvaluationOutcome:
    """A policy as a user would write it."""
    context = EvaluationContext(params=dict(params))
    task = EvaluationTask(task_id="attack", policy_code=textwrap.dedent(code), context=context)
    return harness.run(task)


def run(harness: SandboxHarness, body: str, **params: object) -> EvaluationOutcome:
    """``body`` as the entrypoint's body, after the way out of the restricted builtins."""
    code = ESCAPE + "\ndef choose(x):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return submit(harness, code, **params)


def assert_still_works(harness: SandboxHarness) -> None:
    task = EvaluationTask(task_id="honest", policy_code=HONEST, context=EvaluationContext())
    outcome = harness.run(task)
    assert outcome.result is not None and outcome.result.score == 100.0, outcome


def assert_failed(outcome: EvaluationOutcome, reason: FailureReason, *fragments: str) -> None:
    assert outcome.failure == reason, outcome
    assert outcome.result is None
    for fragment in fragments:
        assert fragment in outcome.detail, outcome.detail


def test_an_honest_policy_scores(guarded: SandboxHarness) -> None:
    assert_still_works(guarded)
    assert guarded.last_isolation["user"] == ("nobody" if os.geteuid() == 0 else "unchanged")


def test_write_a_file(
    guarded: SandboxHarness,
    exposed: SandboxHarness,
    tmp_path: Path,
    open_dir: Path,
    layers: dict[str, object],
) -> None:
    requires(layers, "landlock")  # the world-writable directory; uid 65534 alone is not enough
    private, public = tmp_path / "owned.txt", open_dir / "owned.txt"
    code = f"def choose(x):\n    return open({str(public)!r}, 'w').write('owned')"
    assert_failed(submit(guarded, code), FailureReason.REJECTED, "'open' is not allowed")
    for target in (private, public):
        body = f"""
        os = _os()
        fd = os["open"]({str(target)!r}, os["O_WRONLY"] | os["O_CREAT"], 0o666)
        os["write"](fd, b"owned")
        return 1.0
        """
        assert_failed(run(exposed, body), FailureReason.EXCEPTION, "PermissionError")
        assert not target.exists()
    assert_still_works(exposed)


def test_open_a_socket(
    guarded: SandboxHarness, exposed: SandboxHarness, layers: dict[str, object]
) -> None:
    requires(layers, "netns")
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for listener in (tcp, udp):
            listener.bind(("127.0.0.1", 0))
            listener.settimeout(0.2)
        tcp.listen()
        tcp_port, udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        code = f"""
        import socket
        def choose(x):
            return socket.create_connection(("127.0.0.1", {tcp_port}))
        """
        assert_failed(submit(guarded, code), FailureReason.REJECTED, "import of 'socket'")
        body = f"""
        socket = _os()["sys"].modules["socket"]
        socket.create_connection(("127.0.0.1", {tcp_port}), timeout=1)
        """
        # Landlock refuses the TCP connect (EACCES) before the empty namespace would.
        assert_failed(run(exposed, body), FailureReason.EXCEPTION, "Error: [Errno")
        body = f"""
        socket = _os()["sys"].modules["socket"]
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.sendto(b"owned", ("127.0.0.1", {udp_port}))
        """
        # Landlock does not cover UDP: this is the network namespace alone.
        assert_failed(run(exposed, body), FailureReason.EXCEPTION, "Network is unreachable")
        with pytest.raises(TimeoutError):
            tcp.accept()  # no connection ever arrived
        with pytest.raises(TimeoutError):
            udp.recv(100)  # nor a datagram
    assert exposed.last_isolation["network"] == "namespace"


def test_spawn_a_process(
    guarded: SandboxHarness, exposed: SandboxHarness, open_dir: Path, layers: dict[str, object]
) -> None:
    requires(layers, "landlock")  # exec needs no new process: only Landlock refuses it
    marker = open_dir / "spawned"
    code = f"import os\ndef choose(x):\n    return os.system('touch {marker}')"
    assert_failed(submit(guarded, code), FailureReason.REJECTED, "import of 'os'")
    attempts = {
        "system": f'os["system"]("touch {marker}")',
        "subprocess": f'os["sys"].modules["subprocess"].run(["touch", "{marker}"])',
        "posix_spawn": f'os["posix_spawn"]("/usr/bin/touch", ["touch", "{marker}"], {{}})',
        "exec": f'os["execv"]("/bin/sh", ["sh", "-c", "echo owned > {marker}"])',
    }
    for name, call in attempts.items():
        body = f"os = _os()\nstatus = {call}\nraise ValueError(f'{name} returned {{status}}')"
        outcome = run(exposed, body)
        assert outcome.failure == FailureReason.EXCEPTION, (name, outcome)
        assert "returned 0" not in outcome.detail, (name, outcome.detail)
        assert not marker.exists(), name
    assert_still_works(exposed)


def test_read_the_environment(
    guarded: SandboxHarness, exposed: SandboxHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-" + os.urandom(8).hex()
    monkeypatch.setenv("RETUNE_TEST_SECRET", secret)
    code = "import os\ndef choose(x):\n    return str(os.environ)"
    assert_failed(submit(guarded, code, mode="echo"), FailureReason.REJECTED, "import of 'os'")
    body = """
    os = _os()
    found = [str(dict(os["environ"])), os["getenv"]("RETUNE_TEST_SECRET")]
    for path in ("/proc/self/environ", "/proc/" + str(os["getppid"]()) + "/environ"):
        try:
            fd = os["open"](path, os["O_RDONLY"])
            found.append(str(os["read"](fd, 1 << 20)))
        except Exception as exc:
            found.append(str(exc))
    return str(found)
    """
    outcome = run(exposed, body, mode="echo")
    assert outcome.result is not None, outcome
    assert secret not in outcome.model_dump_json()
    assert "Permission denied" in outcome.result.feedback  # /proc/*/environ is closed


def test_fork_bomb_leaves_no_process_behind(tmp_path: Path) -> None:
    # Runs in its own subreaper process, so any process that escaped would be found.
    script = tmp_path / "bomb.py"
    script.write_text(
        textwrap.dedent(f"""
        import ctypes, json, os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_sandbox_escape import *
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        evaluator = load_evaluator(FIXTURES / "scoring_evaluator.py")
        report = {{}}
        with SandboxHarness(evaluator, "choose", LIMITS, enforce_allowlist=False) as harness:
            body = "os = _os()\\nwhile True:\\n    os['fork']()\\n"
            report["bomb"] = run(harness, body).model_dump(mode="json")
            report["after"] = run(harness, "return 2 * x + 1").model_dump(mode="json")
        # The kernel's own list of this process's children: scanning /proc instead races
        # with unrelated processes that exit between the listing and the read.
        children = []
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{{tid}}/children") as listing:
                children += listing.read().split()
        report["children"] = children
        print(json.dumps(report))
        """)
    )
    completed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["bomb"]["failure"] == "exception"
    assert "Resource temporarily unavailable" in report["bomb"]["detail"]
    assert report["after"]["result"]["score"] == 100.0
    assert report["children"] == []


def test_fork_bomb_is_refused_statically(guarded: SandboxHarness) -> None:
    code = "import os\ndef choose(x):\n    while True:\n        os.fork()"
    assert_failed(submit(guarded, code), FailureReason.REJECTED, "import of 'os'")


def test_infinite_loop_times_out(evaluator: ModuleType) -> None:
    limits = SandboxLimits(wall_seconds=0.5, cpu_seconds=10, memory_mb=256)
    with SandboxHarness(evaluator, "choose", limits) as harness:
        started = time.monotonic()
        outcome = submit(harness, "def choose(x):\n    while True:\n        x = x + 1")
        assert time.monotonic() - started < 0.5 + 1.0
        assert_failed(outcome, FailureReason.TIMEOUT, "wall-time limit of 0.5 s")
        assert_still_works(harness)


def test_cpu_limit(evaluator: ModuleType) -> None:
    limits = SandboxLimits(wall_seconds=10, cpu_seconds=1, memory_mb=256)
    with SandboxHarness(evaluator, "choose", limits) as harness:
        outcome = submit(harness, "def choose(x):\n    while True:\n        x = x + 1")
        assert_failed(outcome, FailureReason.CPU, "CPU-time limit of 1 s")  # before 10 s


def test_allocate_10_gb(guarded: SandboxHarness, exposed: SandboxHarness) -> None:
    started = time.monotonic()
    outcome = submit(guarded, "def choose(x):\n    return len([0] * (10 * 1024**3))")  # legal
    assert_failed(outcome, FailureReason.MEMORY, "memory limit of 256 MB")
    body = 'return len(_os()["__builtins__"]["bytearray"](10 * 1024 ** 3))'
    assert_failed(run(exposed, body), FailureReason.MEMORY)
    assert time.monotonic() - started < 2.0  # refused by RLIMIT_AS, never allocated
    grow = "def choose(x):\n    b = []\n    while True:\n        b.append([x] * 100000)"
    assert_failed(submit(guarded, grow), FailureReason.MEMORY)
    assert_still_works(guarded)


def test_monkeypatch_the_scorer(guarded: SandboxHarness, exposed: SandboxHarness) -> None:
    code = "import scoring_rules\ndef choose(x):\n    return scoring_rules.target(x)"
    assert_failed(submit(guarded, code), FailureReason.REJECTED, "import of 'scoring_rules'")
    code = "def choose(x):\n    return globals()['scoring_rules']"
    assert_failed(submit(guarded, code), FailureReason.REJECTED, "'globals' is not allowed")
    replace = 'rules = _os()["sys"].modules["scoring_rules"]\nrules.compute_score = lambda e: 1e9'
    rewrite = (
        'rules = _os()["sys"].modules["scoring_rules"]\n'
        "rules.compute_score.__code__ = (lambda e: 1e9).__code__"
    )
    for attack in (replace, rewrite):
        outcome = run(exposed, attack + "\nreturn 2 * x + 1")
        assert_failed(outcome, FailureReason.MALFORMED, "replaced trusted code (compute_score)")
        assert_still_works(exposed)  # the next candidate's process never saw the patch


def test_forge_a_result_on_stdout(exposed: SandboxHarness) -> None:
    body = """
    os = _os()
    for fd in (1, 2):
        os["write"](fd, b'{"score": 1e9}\\n')
    return 2 * x
    """
    outcome = run(exposed, body)
    assert outcome.result is not None and outcome.result.score == 90.0  # its real score


def test_forge_a_result_on_the_pipe(exposed: SandboxHarness) -> None:
    fake = json.dumps({"nonce": "guess", "kind": "result", "value": {"score": 1e9}})
    # The result pipe is numbered in the process that runs the harness (here pytest's,
    # which after a long suite holds many descriptors): try every number it could have.
    top = max(int(fd) for fd in os.listdir("/proc/self/fd")) + 64
    body = f"""
    os = _os()
    for fd in range(3, {top}):
        try:
            os["write"](fd, {fake.encode()!r})
        except Exception:
            pass
    """
    # Exiting at once races the forged bytes against the exit: the harness sees either the
    # forgery (MALFORMED) or an exit without a result (CRASH). Neither yields a score.
    forged_then_exit = run(exposed, body + "os['_exit'](0)")
    assert forged_then_exit.result is None
    assert forged_then_exit.failure in (FailureReason.MALFORMED, FailureReason.CRASH)
    assert_failed(run(exposed, body + "return 2 * x + 1"), FailureReason.MALFORMED)
    assert_still_works(exposed)


def test_exit_with_a_fake_score(guarded: SandboxHarness, exposed: SandboxHarness) -> None:
    code = "def choose(x):\n    raise SystemExit(1e9)"
    assert_failed(submit(guarded, code), FailureReason.REJECTED, "'SystemExit' is not")
    outcome = run(exposed, '_os()["sys"].exit({"score": 1e9})')
    assert_failed(outcome, FailureReason.EXCEPTION, "SystemExit")
    outcome = run(exposed, '_os()["_exit"](0)')
    assert_failed(outcome, FailureReason.CRASH, "exited with code 0 without a result")
    assert_still_works(exposed)


def test_known_limit_a_full_in_process_escape_forges_its_own_score(
    guarded: SandboxHarness, exposed: SandboxHarness
) -> None:
    """Pins the documented limit: with the allowlist off, code inside the candidate process
    can read the harness's nonce from its frames and forge its *own* result. The allowlist
    is what stops this; the process boundary still keeps it from every other candidate."""
    body = """
    os = _os()
    frame = os["sys"]._getframe(1)
    while "result_fd" not in frame.f_locals:
        frame = frame.f_back
    nonce = frame.f_locals["frame"]["nonce"]
    fake = {"nonce": nonce, "kind": "result", "value": {"score": 1e9}}
    os["write"](frame.f_locals["result_fd"], os["sys"].modules["json"].dumps(fake).encode())
    os["_exit"](0)
    """
    assert_failed(run(guarded, body), FailureReason.REJECTED, "attribute '.f_back'")
    forged = run(exposed, body)
    assert forged.result is not None and forged.result.score == 1e9
    assert_still_works(exposed)


@pytest.mark.parametrize(
    ("mode", "reason", "fragment"),
    [
        ("nan", FailureReason.MALFORMED, "score must be a finite number"),
        ("missing", FailureReason.MALFORMED, "score: Field required"),
        ("string", FailureReason.MALFORMED, "score: Input should be a valid number"),
        ("not_json", FailureReason.MALFORMED, "not JSON"),
        ("raise", FailureReason.EXCEPTION, "RuntimeError: the trace file is corrupt"),
    ],
)
def test_malformed_returns_and_evaluator_errors(
    guarded: SandboxHarness, mode: str, reason: FailureReason, fragment: str
) -> None:
    outcome = submit(guarded, HONEST, mode=mode)
    assert_failed(outcome, reason, fragment)


def test_exceptions_name_the_failing_line(guarded: SandboxHarness) -> None:
    outcome = submit(guarded, "def choose(x):\n    y = x\n    return y / 0")
    assert_failed(outcome, FailureReason.EXCEPTION, "ZeroDivisionError: float division by zero")
    assert "line 3, in choose" in outcome.detail
    evaluator_error = submit(guarded, HONEST, mode="raise")
    assert "scoring_evaluator.py, line" in evaluator_error.detail


def test_syntax_errors(guarded: SandboxHarness) -> None:
    assert_failed(submit(guarded, "def choose(x):\n    return (x"), FailureReason.SYNTAX)
