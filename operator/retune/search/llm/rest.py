"""Resting a tier whose answers keep coming to nothing.

A model that has stopped answering usably -- a gateway that now returns a content-policy
notice, a model behind the name that no longer follows the format, a parameters task it
keeps breaking, an endpoint that times out and is charged at its reservations -- would
otherwise be paid for every mutation of the search, each time with a repair round, while
the built-in mutator writes the programs anyway. So a tier whose last
:attr:`RestPolicy.after` tries all failed is *rested*: the mutations that would ask it
next go to the next tier of their chain (or the built-in mutator) without a call. After
the rest the tier is asked again; one more failed try rests it again, twice as long (up to
:attr:`RestPolicy.longest`), and one usable answer ends it all.

A try is one question and its repair round; one that the budget refused is not the
tier's failure and counts neither way. The counts are kept in the order tries end, so
with several calls in flight which mutation first meets a rest depends on timing; a
model that answers usably most of the time almost never rests (a run of eight failures
at a 30% failure rate begins about once in 20,000 tries). The tallies live in the search's
ledger, so its checkpoint keeps them: a resumed search goes on with a rest where it was,
rather than pay a failing tier's eight tries again after every operator restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from retune.search.ledger import Ledger, RestTally


@dataclass(frozen=True)
class RestPolicy:
    """When a tier rests, and for how long (in mutations that would have asked it)."""

    after: int = 8
    """Failed tries in a row that rest a tier; 0 never rests one."""
    mutations: int = 20
    """How many of the mutations that would ask the tier its first rest skips."""
    longest: int = 160
    """The longest rest: each rest that follows a failure right after the last doubles."""


@dataclass(frozen=True)
class Rest:
    """A rest that has just begun: what to tell the log and the audit log."""

    failures: int
    mutations: int
    again: bool  # the tier failed its first try after a rest

    def describe(self, last_failure: str) -> str:
        why = (
            "its first try after a rest gave no usable program"
            if self.again
            else f"{self.failures} tries in a row gave no usable program"
        )
        return (
            f"{why} (the last: {last_failure[:200]}); the next {self.mutations} mutations "
            "that would ask this tier are written without it"
        )


class TierRests:
    """Per tier: its failed tries in a row and the rest it is in; safe between threads."""

    def __init__(self, ledger: Ledger, policy: RestPolicy | None = None) -> None:
        self.policy = policy or RestPolicy()
        self._ledger = ledger  # holds the tallies, so the search's checkpoint keeps them

    def skip(self, tier: str) -> int:
        """How many mutations of ``tier``'s rest were left before this one (0: ask it);
        a mutation that is told to skip uses one up."""
        with self._ledger.rest_tallies() as tallies:
            tally = tallies.get(tier)
            if tally is None or tally.left == 0:
                return 0
            tally.left -= 1
            return tally.left + 1

    def record(self, tier: str, *, usable: bool) -> Rest | None:
        """Count one try of ``tier``; the rest it begins, if this failure begins one."""
        after = self.policy.after
        if after <= 0:
            return None
        with self._ledger.rest_tallies() as tallies:
            tally = tallies.setdefault(tier, RestTally(next_rest=self.policy.mutations))
            if usable:
                tally.failures = tally.left = tally.rests = 0
                tally.next_rest = self.policy.mutations
                return None
            if tally.left:  # a call that was in flight when the rest began
                return None
            tally.failures += 1
            if tally.failures < after:
                return None
            rest = Rest(failures=tally.failures, mutations=tally.next_rest, again=tally.rests > 0)
            tally.rests += 1
            tally.left = tally.next_rest
            tally.next_rest = min(2 * tally.next_rest, self.policy.longest)
            tally.failures = after - 1  # on probation: one more failure rests it again
            return rest
