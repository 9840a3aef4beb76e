"""Validation metrics from counts that add up across batches, samples and workers.

Pixel accuracy alone misleads when one phase dominates, so the IoU of each
phase, Dice, CE and the porosity error are reported beside it. Counts are a
fixed-length vector (:data:`FIELDS`) so that workers can sum them with one
all-reduce.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FIELDS", "counts", "summarize", "smoothness_counts"]

#: Order of the count vector.
FIELDS: tuple[str, ...] = ("tp", "fp", "fn", "tn", "ce_sum", "voxels", "porosity_abs_err_sum", "volumes",
                           "lap_sum", "lap_n", "lap_truth_sum")


def counts(prob: np.ndarray, target: np.ndarray, *, threshold: float = 0.5, volume: bool = True,
           smoothness: bool = False) -> np.ndarray:
    """Count vector of one predicted volume (or slice set) against its target.

    Parameters
    ----------
    prob : ndarray
        Pore probability in [0, 1].
    target : ndarray
        Labels (1 = pore), same shape.
    volume : bool
        Count this array as one volume for the porosity error.
    smoothness : bool
        Also count the slice-to-slice Laplacian (axis 0 is z) of the
        prediction and of the target (3D models).
    """
    p = np.asarray(prob, dtype=np.float64)
    t = np.asarray(target) == 1
    m = p >= threshold
    tp = float(np.count_nonzero(m & t))
    fp = float(np.count_nonzero(m & ~t))
    fn = float(np.count_nonzero(~m & t))
    n = float(t.size)
    pc = np.clip(p, 1e-6, 1 - 1e-6)
    ce = float(-(np.log(pc[t]).sum() + np.log1p(-pc[~t]).sum()))
    out = np.zeros(len(FIELDS))
    out[:6] = tp, fp, fn, n - tp - fp - fn, ce, n
    if volume:
        out[6] = abs((tp + fp) / n - (tp + fn) / n)
        out[7] = 1.0
    if smoothness and m.shape[0] >= 3:
        out[8:11] = smoothness_counts(m, t)
    return out


def smoothness_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Sums of ``|m[z-1] - 2 m[z] + m[z+1]|`` of prediction and truth and their voxel count (see
    :func:`pipeline.analyze.truth.laplacian_smoothness`)."""
    a = pred.astype(np.int8)
    b = truth.astype(np.int8)
    la = np.abs(a[:-2] - 2 * a[1:-1] + a[2:]).sum()
    lb = np.abs(b[:-2] - 2 * b[1:-1] + b[2:]).sum()
    return float(la), float(a[1:-1].size), float(lb)


def summarize(c: np.ndarray) -> dict[str, Any]:
    """Metrics from a (summed) count vector."""
    d = dict(zip(FIELDS, (float(v) for v in c)))
    tp, fp, fn, tn, n = d["tp"], d["fp"], d["fn"], d["tn"], d["voxels"]
    out = {
        "ce": d["ce_sum"] / n if n else float("nan"),
        "accuracy": (tp + tn) / n if n else float("nan"),
        "iou_pore": tp / (tp + fp + fn) if tp + fp + fn else 1.0,
        "iou_solid": tn / (tn + fp + fn) if tn + fp + fn else 1.0,
        "dice": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 1.0,
        "porosity": (tp + fp) / n if n else float("nan"),
        "porosity_truth": (tp + fn) / n if n else float("nan"),
        "porosity_abs_error": d["porosity_abs_err_sum"] / d["volumes"] if d["volumes"] else float("nan"),
    }
    out["mean_iou"] = 0.5 * (out["iou_pore"] + out["iou_solid"])
    if d["lap_n"]:
        out["iou_3d"] = out["iou_pore"]
        out["smoothness"] = d["lap_sum"] / d["lap_n"]
        out["smoothness_truth"] = d["lap_truth_sum"] / d["lap_n"]
    return out
