"""The harness run by an unprivileged user (a developer's laptop, a pod without privileges).

The tests run as root, so each case runs a script that imports what it needs, drops to
uid/gid 65534 with no capabilities, and only then leaves the network and starts a
harness, as a zygote would. A candidate that climbs out of its restricted builtins (the
allowlist is off) sends a UDP datagram to a socket of the test's, on the host's loopback.
What the probe reports must match what happened: with an unprivileged user namespace the
datagram never arrives; where user namespaces are refused (here by a seccomp filter, as
a container runtime's default profile does) the report says "none", and it does arrive.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from retune.evaluate.confine import missing_layers

TESTS = Path(__file__).parent
OPERATOR = str(TESTS.parent / "operator")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or platform.machine() != "x86_64",
    reason="drops from root to 65534; the seccomp filter is for x86_64",
)

SCRIPT = """
import ctypes, json, os, socket, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from retune.evaluate.confine import isolate_process_network
from retune.evaluate.contract import EvaluationContext, EvaluationTask, SandboxLimits
from retune.evaluate.loader import load_evaluator
from retune.evaluate.sandbox import SandboxHarness
from test_sandbox_escape import ESCAPE

evaluator = load_evaluator(Path({tests!r}) / "fixtures" / "scoring_evaluator.py")
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)  # from root to another uid: every capability goes
libc = ctypes.CDLL(None, use_errno=True)
if {block_userns!r}:
    # unshare(2) (272 on x86_64) fails with EPERM; everything else is allowed.
    code = [(0x20, 0, 0, 0), (0x15, 0, 1, 272), (0x06, 0, 0, 0x50001), (0x06, 0, 0, 0x7FFF0000)]
    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]
    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]
    table = (Filter * len(code))(*[Filter(*c) for c in code])
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # no_new_privs, which a filter needs
    assert libc.prctl(22, 2, ctypes.byref(Program(len(code), table)), 0, 0) == 0
network = isolate_process_network()  # as the zygote does
limits = SandboxLimits(wall_seconds=20, cpu_seconds=5, memory_mb=256)
body = '''
    socket = _os()["sys"].modules["socket"]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"escaped", ("127.0.0.1", {port}))
    return 0
'''
code = ESCAPE + "\\ndef choose(x):" + body
task = EvaluationTask(task_id="udp", policy_code=code, context=EvaluationContext())
with SandboxHarness(evaluator, "choose", limits, enforce_allowlist=False, network=network) as h:
    report = {{"uid": os.getuid(), "zygote": network, "probe": h.probe()}}
    report["outcome"] = h.run(task).model_dump(mode="json")
    report["isolation"] = h.last_isolation
print(json.dumps(report))
"""


@pytest.fixture
def host_socket() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        yield receiver


def run_as_nobody(port: int, block_userns: bool) -> dict[str, object]:
    script = SCRIPT.format(tests=str(TESTS), port=port, block_userns=block_userns)
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": OPERATOR},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["uid"] == 65534
    return report


def kernel_allows_unprivileged_user_namespaces() -> bool:
    """Asked of the kernel directly, not of the code under test."""
    pid = os.fork()
    if pid == 0:
        os.setresuid(65534, 65534, 65534)
        libc = ctypes.CDLL(None, use_errno=True)
        os._exit(0 if libc.unshare(0x10000000 | 0x40000000) == 0 else 1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def received(receiver: socket.socket) -> bytes | None:
    """A datagram the candidate sent, if any: it was delivered (loopback delivery is
    synchronous) before the harness reaped the candidate, so there is nothing to wait for."""
    try:
        return receiver.recv(100)
    except BlockingIOError:
        return None


def test_unprivileged_user_namespace_keeps_a_candidate_off_the_network(
    host_socket: socket.socket,
) -> None:
    report = run_as_nobody(host_socket.getsockname()[1], block_userns=False)
    probe = report["probe"]
    assert isinstance(probe, dict)
    if not kernel_allows_unprivileged_user_namespaces():
        pytest.skip("this kernel refuses unprivileged user namespaces")
    assert report["zygote"] == "user namespace"
    assert probe == report["isolation"]
    assert probe["network"] == "user namespace"
    assert probe["user"] == "unchanged"  # not root: no uid to drop to
    outcome = report["outcome"]
    assert isinstance(outcome, dict)
    assert outcome["failure"] == "exception", outcome
    assert "Network is unreachable" in outcome["detail"]
    assert received(host_socket) is None
    assert [m.split(":")[0] for m in missing_layers(probe)] == ["user"]


def test_without_user_namespaces_the_report_says_the_network_is_open(
    host_socket: socket.socket,
) -> None:
    report = run_as_nobody(host_socket.getsockname()[1], block_userns=True)
    probe = report["probe"]
    assert isinstance(probe, dict)
    assert report["zygote"] == ""
    assert probe["network"] == "none"
    assert probe["landlock_abi"] and probe["no_new_privs"]  # the other layers still hold
    # The report is measured, not assumed: the datagram the report allows for arrives.
    outcome = report["outcome"]
    assert isinstance(outcome, dict) and outcome["result"] is not None, outcome
    assert received(host_socket) == b"escaped"
    assert [m.split(":")[0] for m in missing_layers(probe)] == ["network", "user"]
