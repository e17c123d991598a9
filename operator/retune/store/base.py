"""Where the engine checkpoint lives. One compressed document, written whole."""

from __future__ import annotations

from typing import Protocol


class Store(Protocol):
    """Persists one opaque checkpoint document."""

    def load(self) -> bytes | None:
        """The last saved document, or None if nothing was saved yet."""
        ...

    def save(self, document: bytes) -> None:
        """Replace the saved document. Either the old or the new one survives a crash."""
        ...
