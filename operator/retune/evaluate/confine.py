"""Operating-system confinement of a candidate process (Linux).

:func:`confine_candidate` runs in a freshly forked child before any untrusted code: it
points stdin/stdout/stderr at /dev/null, closes every other descriptor it was not told to
keep, sets rlimits, leaves the network when it can (a network namespace; without root, one
owned by an unprivileged user namespace), drops to uid/gid 65534 when root (otherwise the
capabilities a user namespace granted), forbids new processes, applies a Landlock ruleset
when the kernel offers one, and clears the environment. Mandatory steps raise on failure (the candidate must then not run);
best-effort ones (network namespace, Landlock, no_new_privs) report whether they took.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import resource
import signal
from pathlib import Path
from typing import Any

from retune.evaluate.contract import SandboxLimits

NOBODY = 65534
MAX_OPEN_FILES = 32

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET, _CLONE_NEWUSER = 0x40000000, 0x10000000
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 1, 4, 38
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_RESTRICT_SELF = 444, 446
_EXIT_ORPHANED = 70


def isolate_process_network() -> str:
    """Move the calling process (a zygote) into an empty network namespace, if permitted.

    Its children then inherit the isolation and need no ``unshare`` of their own. Returns
    how: ``"namespace"`` (root, or CAP_SYS_ADMIN), ``"user namespace"`` (an unprivileged
    user namespace owning the network namespace: a developer's laptop, a pod without
    privileges), or ``""`` when neither is allowed. The caller must be single-threaded.
    """
    if int(_libc.unshare(_CLONE_NEWNET)) == 0:
        return "namespace"
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0 or int(_libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET)) != 0:
        return ""  # root without CAP_SYS_ADMIN could not map nobody: keep the uid drop
    # Map our own ids, so files and processes keep their owners as seen from inside.
    with contextlib.suppress(OSError):  # unmapped ids show as 65534; still isolated
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1")):
            Path(f"/proc/self/{name}").write_text(text)
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    return "user namespace"


def missing_layers(isolation: dict[str, Any]) -> list[str]:
    """What a user should know about the layers a probe (or candidate) reported missing."""
    if "error" in isolation or not isolation:
        return [f"the confinement could not be probed: {isolation.get('error', 'no report')}"]
    missing = []
    if isolation.get("network") in (None, "none"):
        missing.append(
            "network: candidates can reach the network (no network namespace: run as root, "
            "or allow unprivileged user namespaces, e.g. sysctl user.max_user_namespaces)"
        )
    if isolation.get("user") != "nobody":
        missing.append(
            f"user: candidates run as uid {os.geteuid()}, so one that escaped the allowlist "
            "could read that user's files (as root they run as nobody)"
        )
    if not isolation.get("landlock_abi"):
        missing.append(
            "landlock: unavailable (Linux 5.13 or later), so a candidate that escaped could "
            "exec programs and create empty files in world-writable directories"
        )
    if not isolation.get("no_new_privs"):
        missing.append("no_new_privs: not set, so an exec'd setuid program would gain privileges")
    return missing


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the thread that started it exits."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def confine_candidate(
    keep_fds: tuple[int, ...], limits: SandboxLimits, network: str, parent: int
) -> dict[str, Any]:
    """Confine this (freshly forked) process; returns which optional layers took.

    ``network`` says how the zygote already left the network (see
    :func:`isolate_process_network`), ``""`` if it did not.
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGXCPU):
        signal.signal(signum, signal.SIG_DFL)
    os.setpgid(0, 0)  # the zygote kills the whole group on timeout
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != devnull:
            os.dup2(devnull, fd)
    low = 3
    for fd in sorted(keep_fds):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    mapped = _mapped_bytes()
    for which, value in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_NOFILE, MAX_OPEN_FILES),
        (resource.RLIMIT_AS, mapped + limits.memory_mb * (1 << 20)),
    ):
        resource.setrlimit(which, (value, value))
    cpu = max(1, math.ceil(limits.cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL
    network = network or isolate_process_network() or "none"
    user = "unchanged"
    if os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        if os.getresuid() != (NOBODY,) * 3 or os.getresgid() != (NOBODY,) * 3:
            raise PermissionError("could not drop privileges to nobody")
        user = "nobody"
    elif not _drop_capabilities():  # those a user namespace granted
        raise PermissionError("could not drop the capabilities of the user namespace")
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))  # after the uid change, or it is moot
    no_new_privs = _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    _prctl(_PR_SET_DUMPABLE, 0)  # no ptrace, /proc/<pid> owned by root
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
    if os.getppid() != parent:  # the zygote died before the death signal was armed
        os._exit(_EXIT_ORPHANED)
    landlock = _landlock_restrict() if no_new_privs else 0
    os.environ.clear()
    return {
        "network": network,
        "user": user,
        "landlock_abi": landlock,
        "no_new_privs": no_new_privs,
    }


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


def _drop_capabilities() -> bool:
    """Empty the effective, permitted and inheritable sets (no-op when already empty)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable}, all zero
    return int(_libc.capset(ctypes.byref(header), ctypes.byref(data))) == 0


def _mapped_bytes() -> int:
    """The address space already mapped, so memory_mb is what the candidate may add."""
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[0]) * resource.getpagesize()


def _syscall(number: int, *args: Any) -> int:
    """A raw syscall with every integer passed as a full machine word."""
    words = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return int(_libc.syscall(ctypes.c_long(number), *words))


def _prctl(option: int, value: int) -> bool:
    return int(_libc.prctl(*(ctypes.c_ulong(a) for a in (option, value, 0, 0, 0)))) == 0


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


def _landlock_restrict() -> int:
    """Deny file writes, exec, TCP and outbound signals; returns the ABI used, 0 if none.

    Reads stay allowed: evaluators may read their data files.
    """
    abi = _syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, 1)  # 1: ask for the ABI version
    if abi < 1:
        return 0
    # Every v1 right except READ_FILE (1 << 2) and READ_DIR (1 << 3); later ABIs add more.
    fs = (1 << 13) - 1 - (1 << 2) - (1 << 3)
    fs |= (1 << 13) if abi >= 2 else 0  # REFER
    fs |= (1 << 14) if abi >= 3 else 0  # TRUNCATE
    fs |= (1 << 15) if abi >= 5 else 0  # IOCTL_DEV
    net = 0b11 if abi >= 4 else 0  # BIND_TCP, CONNECT_TCP
    scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets, signals
    attr = _RulesetAttr(fs, net, scoped)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        return 0
    try:
        ok = _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) == 0
    finally:
        os.close(ruleset)
    return abi if ok else 0
