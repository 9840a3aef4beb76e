"""Domain randomisation: per-sample parameters drawn from ranges, reproducibly.

A range is either a number (fixed) or ``[low, high]`` (drawn uniformly; for
the quantities in :data:`LOG_UNIFORM`, uniformly in log). Every sample ``i``
of a dataset with seed ``s`` gets its own generator
``default_rng(SeedSequence([s, i]))``, so a sample's parameters do not depend
on how many samples the dataset has or on the order of work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "LOG_UNIFORM",
    "DEFAULT_RENDER_RANGES",
    "draw_value",
    "draw_params",
    "sample_rng",
    "sample_seeds",
    "pick_family",
    "assign_splits",
]

#: Parameters drawn uniformly in log between their bounds.
LOG_UNIFORM: frozenset[str] = frozenset(
    {"dose", "depth_nm", "charging_nm", "texture_nm", "phase_nm", "median_nm", "correlation_nm"}
)

#: Default domain-randomisation ranges of the built-in renderer.
DEFAULT_RENDER_RANGES: dict[str, float | tuple[float, float]] = {
    "sem_angle_deg": (48.0, 56.0),
    "depth_nm": (15.0, 80.0),
    "deep_level": (0.2, 0.7),
    "pore_floor": (0.02, 0.15),
    "solid_level": (0.5, 0.75),
    "texture_amp": (0.03, 0.15),
    "texture_nm": (8.0, 30.0),
    "phase_fraction": (0.0, 0.5),
    "phase_level": (0.55, 0.9),
    "phase_nm": (20.0, 80.0),
    "edge_amp": (0.1, 0.6),
    "edge_nm": (5.0, 25.0),
    "orientation_amp": (0.2, 0.8),
    "detector_amp": (0.0, 0.4),
    "curtain_amp": (0.0, 0.15),
    "curtain_count": (0.0, 30.0),
    "charging_amp": (0.0, 0.3),
    "charging_nm": (150.0, 600.0),
    "charging_coverage": (0.05, 0.3),
    "scanline_amp": (0.0, 0.03),
    "gradient_amp": (0.0, 0.35),
    "drift_px": (0.0, 0.6),
    "blur_px": (0.4, 1.5),
    "dose": (40.0, 400.0),
    "read_noise": (0.005, 0.05),
    "gain": (0.85, 1.15),
    "offset": (-0.05, 0.05),
}


def draw_value(name: str, spec: float | Sequence[float], rng: np.random.Generator) -> float:
    """One value from a fixed number or a ``[low, high]`` range."""
    if isinstance(spec, (int, float)):
        return float(spec)
    lo, hi = (float(v) for v in spec)
    if hi < lo:
        raise ValueError(f"range of {name} is [{lo}, {hi}]; low must not exceed high")
    if lo == hi:
        return lo
    if name in LOG_UNIFORM and lo > 0:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def draw_params(ranges: Mapping[str, float | Sequence[float]], rng: np.random.Generator) -> dict[str, float]:
    """Draw every parameter of ``ranges`` (sorted by name, so the draw order is fixed)."""
    return {name: draw_value(name, ranges[name], rng) for name in sorted(ranges)}


def sample_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Generator of sample ``index`` in a dataset of seed ``seed`` (``stream`` separates uses)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def sample_seeds(seed: int, index: int) -> tuple[int, int]:
    """(structure seed, render seed) of sample ``index``: independent 32-bit integers."""
    ss = np.random.SeedSequence([int(seed), int(index), 99])
    a, b = ss.generate_state(2)
    return int(a), int(b)


def pick_family(weights: Mapping[str, float], rng: np.random.Generator) -> str:
    """Choose a structure family with probability proportional to its weight."""
    names = sorted(k for k, w in weights.items() if w > 0)
    if not names:
        raise ValueError("at least one structure family needs a weight above 0")
    w = np.array([float(weights[k]) for k in names])
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def assign_splits(n: int, seed: int, fractions: Mapping[str, float] | None = None) -> list[str]:
    """Split labels for ``n`` samples by a seeded permutation.

    ``fractions`` (default train 0.8, val 0.1, test 0.1) are rounded to counts;
    when ``n >= 3`` every split with a positive fraction gets at least one
    sample. Sample ``i`` gets the split of its position in the permutation.
    """
    fr = dict(fractions or {"train": 0.8, "val": 0.1, "test": 0.1})
    if any(v < 0 for v in fr.values()) or sum(fr.values()) <= 0:
        raise ValueError(f"split fractions must be >= 0 and not all 0; got {fr}")
    total = sum(fr.values())
    names = [k for k in ("train", "val", "test") if fr.get(k, 0) > 0] + sorted(set(fr) - {"train", "val", "test"})
    counts = {k: int(math.floor(n * fr[k] / total)) for k in names}
    if n >= len(names):
        for k in names:
            counts[k] = max(counts[k], 1)
    while sum(counts.values()) > n:
        big = max(counts, key=lambda k: counts[k])
        counts[big] -= 1
    while sum(counts.values()) < n:
        counts[names[0]] += 1
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 7])).permutation(n)
    out = [""] * n
    pos = 0
    for k in names:
        for j in order[pos : pos + counts[k]]:
            out[int(j)] = k
        pos += counts[k]
    return out


def jsonable(value: Any) -> Any:
    """Plain-JSON copy of nested numbers, tuples and NumPy scalars."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
