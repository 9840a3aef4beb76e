"""The threshold baseline: Otsu, given thresholds, cleaning, chunk independence."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.analyze.truth import truth_metrics
from pipeline.baseline import BaselineParams, baseline_segment
from pipeline.baseline.threshold import clean_slice, otsu_from_histogram


def test_otsu_matches_scikit_image() -> None:
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(70, 20, 10000), rng.normal(150, 25, 5000)])
    counts, edges = np.histogram(v, bins=1024, range=(v.min(), v.max()))
    assert otsu_from_histogram(counts, edges) == pytest.approx(threshold_otsu(v), abs=2 * (edges[1] - edges[0]))
    assert 90 < otsu_from_histogram(counts, edges) < 130


def test_baseline_segments_a_rendered_stack(rendered: tuple[np.ndarray, np.ndarray]) -> None:
    image, truth = rendered
    labels, info = baseline_segment(image)
    lab = labels.compute()
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1}
    m = truth_metrics(lab, truth)
    assert m["accuracy"] > 0.75  # a reasonable baseline, not a perfect one
    assert info["grey_min"] < info["threshold"] < info["grey_max"]
    assert np.array_equal(image, rendered[0])  # input untouched


def test_given_threshold_and_offset(rendered: tuple[np.ndarray, np.ndarray]) -> None:
    image, _ = rendered
    p = BaselineParams(destripe=False, filter="none", threshold=100.0, min_size=0)
    lab, info = baseline_segment(image, p)
    assert info["threshold"] == 100.0
    np.testing.assert_array_equal(lab.compute(), (image < 100).astype(np.uint8))
    _, info2 = baseline_segment(image, p.with_(threshold_offset=0.1))
    assert info2["threshold"] == pytest.approx(100 + 0.1 * (info2["grey_max"] - info2["grey_min"]))


def test_chunking_does_not_change_the_result(rendered: tuple[np.ndarray, np.ndarray]) -> None:
    image, _ = rendered
    a, _ = baseline_segment(image)
    b, _ = baseline_segment(da.from_array(image, chunks=(3, 32, 32)))
    np.testing.assert_array_equal(a.compute(), b.compute())


def test_clean_slice_flips_small_islands() -> None:
    s = np.zeros((20, 20), bool)
    s[2:4, 2:4] = True  # 4 px pore speck
    s[8:18, 8:18] = True
    s[12, 12] = False  # 1 px solid speck inside
    c = clean_slice(s, 5)
    assert not c[2:4, 2:4].any() and c[12, 12] and c.sum() == 100


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="filter"):
        BaselineParams(filter="bilateral")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3D"):
        baseline_segment(np.zeros((4, 4)))
