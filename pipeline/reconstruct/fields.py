"""Scalar fields the marching-cubes methods extract their isosurface from.

Every method of the paper's annex 7.1 that goes through an isosurface is a
*field* computed from the binary mask of the meshed phase plus a *level*:

========================  ============================================  ===============
method                    field (voxel units)                           level
========================  ============================================  ===============
``mc_basic``              the indicator (1 in the phase, 0 outside)     127/255 (the paper's 127)
``mc_smoothed``           gaussian of the indicator, sigma = 2          0.5
``mc_hole_filled``        per-slice flood fill of holes, then closing   127/255
``dual_contouring``       gaussian, sigma = 1.5                         median of the non-zero field
``multiscale``            0.5 g(0.5) + 0.3 g(2) + 0.2 g(4)              0.5
========================  ============================================  ===============

A field is computed on a block that carries a halo of :func:`halo` voxels on
every side (real data inside the volume, mirrored data beyond its faces), so
the field of a block equals the field of the whole volume on that block, bit
for bit: the chunked mesh equals the single-block mesh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

__all__ = ["FieldSpec", "FIELDS", "halo", "gaussian_radius", "block_extent", "block_field"]

#: Level of the binary fields: the paper's 127 of 255.
BINARY_LEVEL = 127.0 / 255.0
#: Gaussian kernels are cut at this many sigmas (scipy's default).
TRUNCATE = 4.0


def gaussian_radius(sigma: float) -> int:
    """Kernel radius in voxels of scipy's gaussian filter for ``sigma`` (voxels)."""
    return int(TRUNCATE * float(sigma) + 0.5)


def _indicator(ext: np.ndarray, h: int, params: dict) -> np.ndarray:
    return ext.astype(np.float32)


def _gaussian(sigma: float) -> Callable[[np.ndarray, int, dict], np.ndarray]:
    def f(ext: np.ndarray, h: int, params: dict) -> np.ndarray:
        s = float(params.get("sigma", sigma))
        return ndi.gaussian_filter(ext.astype(np.float32), s, mode="reflect", truncate=TRUNCATE)

    return f


def _multiscale(ext: np.ndarray, h: int, params: dict) -> np.ndarray:
    sigmas = params.get("sigmas", (0.5, 2.0, 4.0))
    weights = params.get("weights", (0.5, 0.3, 0.2))
    a = ext.astype(np.float32)
    out = np.zeros(a.shape, dtype=np.float32)
    for s, w in zip(sigmas, weights):
        out += np.float32(w) * ndi.gaussian_filter(a, float(s), mode="reflect", truncate=TRUNCATE)
    return out / np.float32(sum(weights))


def _hole_filled(ext: np.ndarray, h: int, params: dict) -> np.ndarray:
    """Fill holes slice by slice (z), then a binary closing with a 6-connected ball.

    ``ext`` holds whole (y, x) slices padded by ``h`` mirrored voxels in y and
    x; holes are filled on the unpadded slices (a hole is a region of the
    other phase that does not touch the slice border), then the padding is
    mirrored again for the closing.
    """
    iters = int(params.get("closing_iterations", 1))
    core = ext[:, h : ext.shape[1] - h, h : ext.shape[2] - h].astype(bool)
    filled = np.empty_like(core)
    for k in range(core.shape[0]):
        filled[k] = ndi.binary_fill_holes(core[k])
    if h:
        filled = np.pad(filled, ((0, 0), (h, h), (h, h)), mode="symmetric")
    if iters > 0:
        st = ndi.generate_binary_structure(3, 1)
        filled = ndi.binary_dilation(filled, st, iterations=iters, border_value=0)
        filled = ndi.binary_erosion(filled, st, iterations=iters, border_value=1)
    return filled.astype(np.float32)


@dataclass(frozen=True)
class FieldSpec:
    """How one isosurface method turns a mask block into a field.

    Attributes
    ----------
    compute : callable
        ``compute(ext, h, params) -> field`` on a block with halo ``h``
        (the returned array has the shape of ``ext``; only its core is used).
    halo : callable
        ``halo(params) -> int``: voxels of halo the field needs.
    level : float or "median"
        Isosurface level; ``"median"`` is the median of the non-zero field
        over the whole volume.
    whole_slices : bool
        The field needs whole (y, x) slices (per-slice flood fill): blocks
        span the full y and x extent.
    """

    compute: Callable[[np.ndarray, int, dict], np.ndarray]
    halo: Callable[[dict], int]
    level: float | str = 0.5
    whole_slices: bool = False


FIELDS: dict[str, FieldSpec] = {
    "mc_basic": FieldSpec(_indicator, lambda p: 0, level=BINARY_LEVEL),
    "mc_smoothed": FieldSpec(_gaussian(2.0), lambda p: gaussian_radius(p.get("sigma", 2.0))),
    "mc_hole_filled": FieldSpec(_hole_filled, lambda p: 2 * int(p.get("closing_iterations", 1)), level=BINARY_LEVEL,
                                whole_slices=True),
    "dual_contouring": FieldSpec(_gaussian(1.5), lambda p: gaussian_radius(p.get("sigma", 1.5)), level="median"),
    "multiscale": FieldSpec(_multiscale, lambda p: gaussian_radius(max(p.get("sigmas", (0.5, 2.0, 4.0))))),
}


def halo(method: str, params: dict | None = None) -> int:
    """Halo in voxels that the field of ``method`` needs around a block."""
    return int(FIELDS[method].halo(dict(params or {})))


def block_extent(
    shape: tuple[int, ...], region: tuple[slice, ...], h: int
) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
    """The region grown by ``h`` voxels, clipped to the volume, and the mirrored padding still missing.

    Returns
    -------
    ext : tuple of slice
        Region plus halo inside the volume.
    pads : list of (int, int)
        Voxels to mirror-pad before and after, per axis, at the faces of the volume.
    """
    lo = [max(0, r.start - h) for r in region]
    hi = [min(n, r.stop + h) for r, n in zip(region, shape)]
    pads = [(h - (r.start - a), h - (b - r.stop)) for r, a, b in zip(region, lo, hi)]
    return tuple(slice(a, b) for a, b in zip(lo, hi)), pads


def block_field(ext: np.ndarray, pads: list[tuple[int, int]], method: str, params: dict | None = None) -> np.ndarray:
    """Field of ``method`` on a block, from the block's mask plus its halo.

    Parameters
    ----------
    ext : bool array
        The phase mask on the block grown by :func:`halo` voxels, clipped to
        the volume (see :func:`block_extent`).
    pads : list of (int, int)
        Mirrored padding still missing at the faces of the volume.
    method : str
        A key of :data:`FIELDS`.
    params : dict, optional
        Method parameters (``sigma``, ``sigmas``, ``weights``, ``closing_iterations``).

    Returns
    -------
    numpy.ndarray of float32
        The field on the block (its halo removed).
    """
    params = dict(params or {})
    spec = FIELDS[method]
    h = int(spec.halo(params))
    ext = np.asarray(ext).astype(bool, copy=False)
    if any(p != (0, 0) for p in pads):
        ext = _pad_symmetric(ext, pads)
    f = spec.compute(ext, h, params)
    core = tuple(slice(h, n - h) for n in f.shape)
    return np.ascontiguousarray(f[core], dtype=np.float32)


def _pad_symmetric(a: np.ndarray, pads: list[tuple[int, int]]) -> np.ndarray:
    """Mirror-pad (``d c b a | a b c d``), repeating when a pad is wider than the array."""
    out = a
    for axis, (b, e) in enumerate(pads):
        while b > 0 or e > 0:
            n = out.shape[axis]
            bb, ee = min(b, n), min(e, n)
            widths = [(0, 0)] * out.ndim
            widths[axis] = (bb, ee)
            out = np.pad(out, widths, mode="symmetric")
            b, e = b - bb, e - ee
    return out
