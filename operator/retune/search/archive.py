"""A CVT-MAP-Elites archive over structural and behavioural descriptors.

Until the initial population is in, the archive is a plain list. ``freeze`` then fixes the
normaliser (per-dimension bounds from the initial population, with headroom) and the
centroids (k-means over points drawn uniformly in the unit cube), so a program never
moves cell for the rest of the run.
"""

from __future__ import annotations

import random

import numpy as np
from pydantic import BaseModel, Field

from retune.search.program import program_size, structural_features


class Elite(BaseModel):
    """A scored program and where it sits."""

    index: int  # the candidate's sequence number in the run
    code: str
    code_hash: str
    score: float
    quick_score: float | None = None
    quick_subscores: dict[str, float] = Field(default_factory=dict)
    subscores: dict[str, float] = Field(default_factory=dict)
    feedback: str = ""
    parent: int | None = None
    model: str | None = None
    description: str = ""


class Normaliser(BaseModel):
    low: list[float]
    high: list[float]

    def apply(self, vector: list[float]) -> list[float]:
        out = []
        for value, lo, hi in zip(vector, self.low, self.high, strict=True):
            span = hi - lo
            out.append(min(1.0, max(0.0, (value - lo) / span)) if span > 0 else 0.5)
        return out


class ArchiveState(BaseModel):
    """Everything needed to rebuild the archive exactly."""

    structural: list[str]
    behavioural: list[str] = Field(default_factory=list)
    cells_wanted: int
    population: list[Elite] = Field(default_factory=list)  # before freeze
    normaliser: Normaliser | None = None
    centroids: list[list[float]] | None = None
    cells: dict[int, Elite] = Field(default_factory=dict)


class Archive:
    """Keeps the best program per niche."""

    def __init__(self, state: ArchiveState) -> None:
        self.state = state
        self._centroids = np.array(state.centroids) if state.centroids is not None else None

    @classmethod
    def empty(cls, structural: list[str], behavioural: list[str], cells: int) -> Archive:
        return cls(ArchiveState(structural=structural, behavioural=behavioural, cells_wanted=cells))

    # -- descriptors -------------------------------------------------------------------
    def descriptor(self, elite: Elite) -> list[float]:
        features = structural_features(elite.code)
        vector = [features.get(name, 0.0) for name in self.state.structural]
        vector += [elite.subscores.get(name, 0.0) for name in self.state.behavioural]
        return vector

    @property
    def frozen(self) -> bool:
        return self._centroids is not None

    def freeze(self, rng: random.Random) -> None:
        """Fix normaliser and centroids from the initial population, then place it."""
        population = self.state.population
        if not self.state.behavioural:
            names = sorted({k for e in population for k in e.subscores})
            self.state.behavioural = names
        vectors = np.array([self.descriptor(e) for e in population], dtype=float)
        low = vectors.min(axis=0)
        high = vectors.max(axis=0)
        structural_dims = len(self.state.structural)
        span = np.maximum(high - low, 1e-9)
        # Structural counts grow as programs grow: leave room above. Behavioural scores
        # can move either way: leave room on both sides.
        low_out = np.where(np.arange(len(low)) < structural_dims, 0.0, low - 0.5 * span)
        high_out = np.where(
            np.arange(len(high)) < structural_dims,
            np.maximum(high * 2.0, high + 2.0),
            high + 0.5 * span,
        )
        self.state.normaliser = Normaliser(low=low_out.tolist(), high=high_out.tolist())
        self._centroids = _cvt_centroids(self.state.cells_wanted, len(low), rng)
        self.state.centroids = self._centroids.tolist()
        self.state.population = []
        for elite in sorted(population, key=lambda e: e.index):
            self.insert(elite)

    def cell_of(self, elite: Elite) -> int:
        assert self._centroids is not None and self.state.normaliser is not None
        point = np.array(self.state.normaliser.apply(self.descriptor(elite)))
        return int(np.argmin(((self._centroids - point) ** 2).sum(axis=1)))

    # -- contents ----------------------------------------------------------------------
    def insert(self, elite: Elite, *, ties_to_smaller: bool = False) -> bool:
        """Add ``elite``; True if it is kept (a new niche or better than the incumbent;
        with ``ties_to_smaller``, also a smaller program scoring the same)."""
        if not self.frozen:
            self.state.population.append(elite)
            return True
        cell = self.cell_of(elite)
        incumbent = self.state.cells.get(cell)
        if (
            incumbent is None
            or elite.score > incumbent.score
            or (
                ties_to_smaller
                and elite.score == incumbent.score
                and program_size(elite.code) < program_size(incumbent.code)
            )
        ):
            self.state.cells[cell] = elite
            return True
        return False

    def elites(self) -> list[Elite]:
        """All programs in the archive, in a stable order."""
        if not self.frozen:
            return list(self.state.population)
        return [self.state.cells[c] for c in sorted(self.state.cells)]

    def best(self) -> Elite | None:
        elites = self.elites()
        return max(elites, key=lambda e: (e.score, -e.index)) if elites else None

    @property
    def coverage(self) -> float:
        if not self.frozen:
            return 0.0
        return len(self.state.cells) / max(1, self.state.cells_wanted)

    def cell_map(self) -> list[tuple[list[float], float | None]]:
        """(centroid, score or None) for every cell, for the report."""
        if self._centroids is None:
            return []
        return [
            (c.tolist(), self.state.cells[i].score if i in self.state.cells else None)
            for i, c in enumerate(self._centroids)
        ]


def _cvt_centroids(k: int, dims: int, rng: random.Random, iterations: int = 25) -> np.ndarray:
    """Centroids of a centroidal Voronoi tessellation of the unit cube (Lloyd's k-means)."""
    generator = np.random.default_rng(rng.getrandbits(63))
    samples = generator.random((min(max(k * 25, 2000), 50_000), dims))
    centroids = samples[generator.choice(len(samples), size=k, replace=False)].copy()
    for _ in range(iterations):
        nearest = _nearest(samples, centroids)
        counts = np.bincount(nearest, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, samples)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return np.round(centroids, 12)


def _nearest(points: np.ndarray, centroids: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Index of the nearest centroid for every point, in bounded memory."""
    out = np.empty(len(points), dtype=np.int64)
    c_norms = (centroids**2).sum(axis=1)
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        distances = c_norms[None, :] - 2.0 * block @ centroids.T
        out[start : start + chunk] = distances.argmin(axis=1)
    return out
