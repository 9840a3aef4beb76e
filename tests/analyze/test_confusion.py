"""Validation counts add up across slices and workers and give the analysis package's metrics."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analyze.truth import truth_metrics
from pipeline.analyze.confusion import counts, summarize


def test_summed_counts_give_the_truth_metrics_of_the_whole() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random((6, 20, 20)) > 0.6).astype(np.uint8)
    prob = np.clip(truth * 0.7 + rng.random(truth.shape) * 0.5, 0, 1)
    parts = counts(prob[:3], truth[:3], volume=False) + counts(prob[3:], truth[3:], volume=False)
    whole = counts(prob, truth, smoothness=True)
    ref = truth_metrics((prob >= 0.5).astype(np.uint8), truth)
    m = summarize(whole)
    for key in ("accuracy", "iou_pore", "iou_solid", "dice", "porosity", "porosity_truth", "smoothness", "smoothness_truth"):
        assert m[key] == pytest.approx(ref[key], abs=1e-12), key
    assert m["porosity_abs_error"] == pytest.approx(ref["porosity_abs_error"])
    assert summarize(parts)["iou_pore"] == pytest.approx(m["iou_pore"])
    p = np.clip(prob, 1e-6, 1 - 1e-6)
    ce = -np.mean(np.where(truth == 1, np.log(p), np.log1p(-p)))
    assert m["ce"] == pytest.approx(ce)


def test_porosity_error_is_averaged_per_volume() -> None:
    t = np.zeros((2, 4, 4), np.uint8)
    t[:, :2] = 1
    a = counts(np.ones_like(t, float), t)       # porosity 1 vs 0.5
    b = counts(t.astype(float), t)              # exact
    assert summarize(a + b)["porosity_abs_error"] == pytest.approx(0.25)
