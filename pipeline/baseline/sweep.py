"""Sensitivity of the threshold baseline's porosity to its parameters (the paper's Fig. 1).

One parameter is varied at a time around the defaults, and every
combination of the threshold offset with the filter size is also tried;
each setting gives a porosity. The spread (max - min, in porosity points)
is what the paper reports as up to 10 %.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np

from pipeline.baseline.threshold import BaselineParams, _segment_block, _slices, baseline_threshold, denoise_slice, destripe_slice

__all__ = ["DEFAULT_GRID", "FILTER_PARAMS", "DESTRIPE_PARAMS", "sensitivity_sweep"]

#: Values tried for each parameter.
DEFAULT_GRID: dict[str, Sequence[Any]] = {
    "threshold_offset": (-0.06, -0.04, -0.02, 0.0, 0.02, 0.04, 0.06),
    "filter_size": (1.0, 3.0, 5.0, 7.0),
    "filter": ("median", "gaussian", "none"),
    "min_size": (0, 16, 64, 256),
    "destripe": (True, False),
}


#: The parameters the filtered stack depends on (the others only threshold and clean it).
FILTER_PARAMS = ("destripe", "stripe_width", "filter", "filter_size")
#: Those of them the destriped stack (the first step of the filter) depends on.
DESTRIPE_PARAMS = ("destripe", "stripe_width")


def _porosity(filtered: da.Array, p: BaselineParams) -> tuple[float, dict[str, float]]:
    """The baseline's porosity and threshold on an already filtered stack (:func:`baseline_segment`'s later steps)."""
    info = baseline_threshold(filtered, p)
    labels = filtered.map_blocks(_segment_block, info["threshold"], p.min_size, dtype=np.uint8)
    return float(da.mean(labels).compute()), info


def sensitivity_sweep(
    image: Any,
    base: BaselineParams | None = None,
    grid: dict[str, Sequence[Any]] | None = None,
    *,
    max_slices: int = 64,
    joint: tuple[str, str] | None = ("threshold_offset", "filter_size"),
) -> dict[str, Any]:
    """Porosity of the baseline over a grid of its parameters.

    Parameters
    ----------
    image : array (z, y, x)
        Grey stack, pores dark.
    base : BaselineParams, optional
        Defaults around which one parameter at a time is varied.
    grid : dict, optional
        Parameter -> values (default :data:`DEFAULT_GRID`).
    max_slices : int
        The sweep runs on at most this many slices evenly spread through the
        stack (porosity is a per-slice average, so this estimates it well).
    joint : (str, str), optional
        Two parameters also varied together (all combinations).

    Returns
    -------
    dict
        ``runs``: list of {``params`` (the changed ones), ``porosity``,
        ``threshold``}; ``by_parameter``: {name: {"values", "porosity"}};
        ``default_porosity``, ``min``, ``max``, ``spread`` (max - min),
        ``std``, ``slices`` used.
    """
    base = base or BaselineParams()
    grid = dict(grid or DEFAULT_GRID)
    arr = da.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"image must be 3D (z, y, x); got shape {arr.shape}")
    if arr.shape[0] > max_slices:
        idx = np.unique(np.linspace(0, arr.shape[0] - 1, max_slices).round().astype(int))
        arr = arr[idx]
    arr = arr.rechunk({0: "auto", 1: -1, 2: -1}).persist() if isinstance(image, da.Array) else da.from_array(np.asarray(arr.compute() if isinstance(arr, da.Array) else arr), chunks=(8, -1, -1))
    # every setting, in the order of the report: the defaults, one parameter at a time, the joint grid
    settings: list[dict[str, Any]] = [{}]
    settings += [{name: v} for name, values in grid.items() for v in values]
    if joint and all(j in grid for j in joint):
        settings += [{joint[0]: a, joint[1]: b} for a, b in itertools.product(grid[joint[0]], grid[joint[1]])]

    def key_of(changes: dict[str, Any]) -> tuple:
        return tuple(sorted(base.with_(**changes).as_dict().items(), key=lambda kv: kv[0]))

    unique: dict[tuple, dict[str, Any]] = {}
    for changes in settings:
        unique.setdefault(key_of(changes), changes)
    # settings that share a filter share its (persisted) filtered stack: filtered once, thresholded many
    # times; filters that share the stripe removal share its (persisted) destriped stack
    groups: dict[tuple, dict[tuple, list[tuple]]] = {}
    for key, changes in unique.items():
        p = base.with_(**changes)
        by_filter = groups.setdefault(tuple(getattr(p, n) for n in DESTRIPE_PARAMS), {})
        by_filter.setdefault(tuple(getattr(p, n) for n in FILTER_PARAMS), []).append(key)
    found: dict[tuple, tuple[float, dict[str, float]]] = {}
    for by_filter in groups.values():
        first = base.with_(**unique[next(iter(by_filter.values()))[0]])
        destriped = arr.map_blocks(_slices, destripe_slice, first, dtype=np.float32).persist()
        for keys in by_filter.values():
            filtered = destriped.map_blocks(_slices, denoise_slice, base.with_(**unique[keys[0]]), dtype=np.float32).persist()
            for key in keys:
                found[key] = _porosity(filtered, base.with_(**unique[key]))
            del filtered
        del destriped
    runs = [{"params": dict(unique[k]), "porosity": found[k][0], "threshold": found[k][1]["threshold"]} for k in unique]

    def run(changes: dict[str, Any]) -> float:
        return found[key_of(changes)][0]

    default = run({})
    by_param: dict[str, dict[str, list]] = {}
    for name, values in grid.items():
        by_param[name] = {"values": list(values), "porosity": [run({name: v}) for v in values]}
    por = np.asarray([r["porosity"] for r in runs])
    return {
        "runs": runs,
        "by_parameter": by_param,
        "default_porosity": default,
        "min": float(por.min()),
        "max": float(por.max()),
        "spread": float(por.max() - por.min()),
        "std": float(por.std()),
        "slices": int(arr.shape[0]),
        "base_params": base.as_dict(),
    }
