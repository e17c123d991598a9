"""Child processes of the test fixtures that never outlive the test session.

Every process runs in its own process group (so its children die with it) and is
registered until stopped. Three nets catch the ways a session can end early:
fixture teardown stops processes in order; an ``atexit`` hook stops whatever is still
registered (pytest interrupted by Ctrl-C, or by SIGTERM/SIGHUP, which
``install_signal_handlers`` turns into an orderly exit); and where util-linux's
``setpriv`` exists, the kernel signals each child when pytest itself is killed outright.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()
_SETPRIV = shutil.which("setpriv")


class ManagedProcess:
    """One long-running child (etcd, kube-apiserver, prometheus, the node agent...)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        parent_death_signal: str = "KILL",
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.parent_death_signal = parent_death_signal
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process, appending its output to ``log_path``."""
        argv = self.argv
        if _SETPRIV:
            argv = [_SETPRIV, f"--pdeathsig={self.parent_death_signal}", "--", *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        with _live_lock:
            _live.add(self)

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def terminate(self) -> None:
        """Send SIGTERM to the process group without waiting (see ``stop``)."""
        if self._popen is not None and self._popen.poll() is None:
            signal_group(self._popen.pid, signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout``."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            signal_group(popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout)
        # Also after a clean exit: children that stayed in the group go too.
        signal_group(popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(5)
        with _live_lock:
            _live.discard(self)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the process's log, for failure reports."""
        try:
            data = self.log_path.read_bytes()[-200_000:]
        except OSError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def describe_exit(self) -> str:
        """One line saying how the process ended, with its log's location."""
        return f"{self.name} exited with code {self.returncode} (log: {self.log_path})"


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_all(timeout: float = 3.0) -> None:
    """Stop every process still registered; used at interpreter exit."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        proc.stop(timeout)


atexit.register(stop_all)


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt so teardown and atexit still run.

    Handlers somebody else installed are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, interrupt)


def wait_until(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    *,
    interval: float = 0.2,
    abort: Callable[[], str | None] | None = None,
) -> object:
    """Poll ``condition`` until it returns something truthy, and return that.

    ``abort`` is checked on every round; a string from it ends the wait early with that
    reason (a component that died will not become ready). Exceptions from ``condition``
    count as "not yet" and the last one is named in the timeout error.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if abort is not None and (reason := abort()):
            raise RuntimeError(f"gave up waiting for {what}: {reason}")
        try:
            result = condition()
            if result:
                return result
        except Exception as error:
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)
