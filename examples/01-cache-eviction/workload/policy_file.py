"""The eviction policy the service runs: loaded from its mounted file, reloaded on change.

The file is untrusted code (a candidate the operator rolled out), so it is only ever
loaded through ``retune.evaluate.loader.load_policy``: the allowlist first, then restricted
builtins. A file that fails to load, or whose ``priority`` does not return a finite number
on a sample object, is refused and the policy already running stays; the refusal is
logged and kept for ``/policy`` and the metrics.

Changes are found by content, not by modification time: a ConfigMap volume is updated
by swapping a symlink, and the hash of what is read is what the service reports.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from cache_sim import PriorityFn

from retune.evaluate.loader import load_policy

ENTRYPOINT = "priority"
HASH_LENGTH = 10  # as the operator's revision label (retune.dev/revision)
# A resident object as the evaluator would pass it: 4 KiB, hit 3 times, never evicted.
SAMPLE_ARGS = (4096, 100.0, 90.0, 3, 10.0, 0, -1.0)

log = logging.getLogger("cache.policy")


class PolicyLoadError(Exception):
    """The policy file cannot be read, is refused, or does not return a number."""


@dataclass(frozen=True)
class Policy:
    hash: str
    priority: PriorityFn
    loaded_at: float


@dataclass(frozen=True)
class Refusal:
    hash: str
    reason: str
    at: float


def content_hash(data: bytes) -> str:
    """The policy's content hash, as in the operator's revision names and labels."""
    return hashlib.sha256(data).hexdigest()[:HASH_LENGTH]


class PolicyFile:
    """The policy at ``path``: ``active`` is what runs, ``refused`` the latest refusal."""

    def __init__(self, path: str | Path, entrypoint: str = ENTRYPOINT) -> None:
        self.path = Path(path)
        self.entrypoint = entrypoint
        self.active = self._load_initial()
        self.refused: Refusal | None = None
        self._seen: str | None = self.active.hash  # the last content looked at, or None
        log.info("policy %s active (%s)", self.active.hash, self.path)

    def poll(self) -> bool:
        """Reload if the file's content changed; True when a new policy became active."""
        try:
            data = self._read()
        except PolicyLoadError as error:
            if self._seen is not None:  # say it once, not at every poll
                log.warning("%s; keeping policy %s", error, self.active.hash)
                self._seen = None
            return False
        digest = content_hash(data)
        if digest == self._seen:
            return False
        if digest == self.active.hash:  # back after a gap, or rolled back to what runs
            self._seen = digest
            return False
        try:
            policy = self._load(data)
        except _ChangedWhileLoading:
            return False  # the next poll reads the new content
        except PolicyLoadError as error:
            self._seen = digest
            self.refused = Refusal(digest, str(error), time.time())
            log.error("policy %s refused: %s; keeping policy %s", digest, error, self.active.hash)
            return False
        self._seen = digest
        self.active = policy
        log.info("policy %s active (%s)", policy.hash, self.path)
        return True

    def _load_initial(self) -> Policy:
        for _ in range(3):  # a ConfigMap update racing the start-up is the only retry
            try:
                return self._load(self._read())
            except _ChangedWhileLoading:
                continue
        raise PolicyLoadError(f"policy file {self.path} keeps changing while it is loaded")

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as error:
            raise PolicyLoadError(f"cannot read policy file {self.path}: {error}") from error

    def _load(self, data: bytes) -> Policy:
        try:
            priority = load_policy(self.path, self.entrypoint)
            value = float(priority(*SAMPLE_ARGS))
        except Exception as error:  # a refusal, a syntax error, or the policy's own error
            raise PolicyLoadError(f"{type(error).__name__}: {error}") from error
        # load_policy read the file again: make sure it read what was hashed.
        if self._read() != data:
            raise _ChangedWhileLoading
        if not math.isfinite(value):
            raise PolicyLoadError(f"{self.entrypoint}{SAMPLE_ARGS} returned {value!r}")
        return Policy(content_hash(data), priority, time.time())


class _ChangedWhileLoading(Exception):
    """The file changed between the read that was hashed and the loader's read."""
