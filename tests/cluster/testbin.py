"""Where the pinned control-plane binaries and helm are (built by ``build-binaries``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().with_name("build-binaries")


class TestbinMissing(RuntimeError):
    """The binaries are not built; the message says how to build them."""


def testbin_dir() -> Path:
    """The directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler, helm.

    Never builds (a cold build takes many minutes); ``build-binaries --check`` verifies the
    cached set against its stamp.
    """
    result = subprocess.run(
        [str(BUILD_SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"{BUILD_SCRIPT} --check failed"]
        raise TestbinMissing(lines[-1])
    return Path(result.stdout.strip())
