"""Segmentation quality against a ground truth (paper §3.7): pixel and volumetric metrics.

All counts are reduced block by block (dask), so neither volume is loaded whole.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

__all__ = ["truth_metrics", "laplacian_smoothness", "cross_entropy", "align_truth"]

#: Probabilities are clipped to [EPS, 1 - EPS] in the cross-entropy (float16 stores resolve about 5e-4 near 1).
EPS = 1e-4


def laplacian_smoothness(labels: Any, *, phase: int = 1) -> float:
    """Mean absolute second difference of the phase indicator across slices (z).

    ``mean |m[z-1] - 2 m[z] + m[z+1]|`` over the inner slices: 0 for a
    structure constant along z, larger when slices flicker. Slice-to-slice
    consistency, the paper's "Laplacian-based smoothness" (lower is smoother).
    """
    a = (da.asarray(labels) == phase).astype(np.int8)
    if a.shape[0] < 3:
        return float("nan")
    lap = a[:-2] - 2 * a[1:-1] + a[2:]
    return float(da.abs(lap).mean().compute())


def align_truth(truth: Any, labels: Any) -> Any:
    """``truth`` (an xarray volume) on the voxels of ``labels``, matched by coordinates (nm).

    A segmentation in the corrected geometry (tilt stretched, ROI cropped)
    is compared with a reference by where its voxels are: each voxel takes
    the reference voxel nearest to its centre. Equal shapes are taken as they are.

    Raises
    ------
    ValueError
        When a voxel of ``labels`` lies more than half a reference voxel outside the reference.
    """
    if tuple(truth.shape) == tuple(labels.shape):
        return truth
    out = truth
    for dim in ("z", "y", "x"):
        tc, lc = np.asarray(truth[dim].values, float), np.asarray(labels[dim].values, float)
        step = float(np.median(np.diff(tc))) if tc.size > 1 else 1.0
        if lc.min() < tc.min() - step / 2 - 1e-6 or lc.max() > tc.max() + step / 2 + 1e-6:
            raise ValueError(f"the reference covers {dim} {tc.min():.1f}..{tc.max():.1f} nm, the labels "
                             f"{lc.min():.1f}..{lc.max():.1f} nm; expected the reference to cover the labels")
        idx = np.clip(np.rint((lc - tc[0]) / step).astype(int), 0, tc.size - 1)
        out = out.isel({dim: idx})
    return out.assign_coords({d: labels[d] for d in ("z", "y", "x")})


def cross_entropy(probability: Any, truth: Any, *, phase: int = 1) -> float:
    """Mean binary cross-entropy (nats per voxel) of a pore probability against labels, block by block.

    ``probability`` in [0, 1] (clipped to [EPS, 1 - EPS]), ``truth`` labels of the same shape.
    """
    p = da.clip(da.asarray(probability).astype(np.float32), EPS, 1 - EPS)
    t = da.asarray(truth) == phase
    if p.shape != t.shape:
        raise ValueError(f"probability shape {p.shape} differs from truth shape {t.shape}")
    ce = -da.where(t, da.log(p), da.log1p(-p))
    return float(ce.mean(dtype=np.float64).compute())


def truth_metrics(pred: Any, truth: Any, *, phase: int = 1, probability: Any = None) -> dict[str, Any]:
    """Accuracy, IoU (pore, solid, mean), Dice, 3D IoU, per-slice IoU, smoothness, porosity error.

    Parameters
    ----------
    pred, truth : arrays (z, y, x)
        Labels (1 = pore), same shape; NumPy or dask.
    probability : array (z, y, x), optional
        The pore probability ``pred`` was thresholded from; adds ``ce``.

    Returns
    -------
    dict
        ``accuracy``; ``iou_pore``, ``iou_solid``, ``mean_iou`` and ``dice``
        from the voxel counts of the whole volume (``iou_3d`` = ``iou_pore``,
        the volumetric overlap); ``slice_iou_pore_mean`` (the 2D metric,
        averaged over z slices that have pores in either); ``smoothness`` and
        ``smoothness_truth`` (:func:`laplacian_smoothness`); ``porosity``,
        ``porosity_truth``, ``porosity_error`` (signed) and ``porosity_abs_error``;
        with ``probability`` also ``ce`` (:func:`cross_entropy`).
    """
    p = da.asarray(pred) == phase
    t = da.asarray(truth) == phase
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from truth shape {t.shape}")
    tp_s = (p & t).sum(axis=(1, 2))
    fp_s = (p & ~t).sum(axis=(1, 2))
    fn_s = (~p & t).sum(axis=(1, 2))
    tp_s, fp_s, fn_s = (np.asarray(x, dtype=np.float64) for x in da.compute(tp_s, fp_s, fn_s))
    n = float(np.prod(p.shape))
    tp, fp, fn = tp_s.sum(), fp_s.sum(), fn_s.sum()
    tn = n - tp - fp - fn
    iou_p = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    iou_s = tn / (tn + fp + fn) if tn + fp + fn else 1.0
    union = tp_s + fp_s + fn_s
    slice_iou = float(np.mean(tp_s[union > 0] / union[union > 0])) if (union > 0).any() else 1.0
    por, por_t = (tp + fp) / n, (tp + fn) / n
    extra = {} if probability is None else {"ce": cross_entropy(probability, truth, phase=phase)}
    return {
        **extra,
        "accuracy": float((tp + tn) / n),
        "iou_pore": float(iou_p),
        "iou_solid": float(iou_s),
        "mean_iou": float(0.5 * (iou_p + iou_s)),
        "dice": float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else 1.0,
        "iou_3d": float(iou_p),
        "slice_iou_pore_mean": slice_iou,
        "smoothness": laplacian_smoothness(pred, phase=phase),
        "smoothness_truth": laplacian_smoothness(truth, phase=phase),
        "porosity": float(por),
        "porosity_truth": float(por_t),
        "porosity_error": float(por - por_t),
        "porosity_abs_error": float(abs(por - por_t)),
    }
