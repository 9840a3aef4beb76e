"""Blender (Cycles) backend: same layout as the built-in renderer, cut faces at the right slices."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.synth.render_blender import blender_available

pytestmark = pytest.mark.blender

if not blender_available():
    pytest.skip("bpy (the porelab[blender] extra) is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def struct():
    from pipeline.synth.structures import random_spheres

    return random_spheres((16, 24, 24), 0.5, 60.0, 0.2, (10.0, 10.0, 10.0), seed=2)


def test_blender_render_pairs_with_labels(struct) -> None:
    from pipeline.synth.render_blender import render_blender

    clean = {"drift_px": 0.0, "dose": 1e7, "read_noise": 0.0, "curtain_amp": 0.0, "charging_amp": 0.0,
             "gradient_amp": 0.0, "scanline_amp": 0.0, "blur_px": 0.0, "depth_nm": 20.0}
    r = render_blender(struct.labels, struct.voxel_size_nm, clean, seed=0, slices=[4, 10], samples=4)
    assert r.image.dtype == np.uint8 and r.image.shape == (2, 24, 24)
    np.testing.assert_array_equal(r.labels, struct.labels[[4, 10]])
    assert r.drift_px.shape == (2, 2)
    for j, k in enumerate((4, 10)):
        img, lab = r.image[j].astype(float), struct.labels[k]
        assert img[lab == 0].mean() > img[lab == 1].mean() + 20  # the cut face is bright, pores darker
        thr = 0.5 * (img[lab == 0].mean() + img[lab == 1].mean())
        guess = img < thr
        iou = (guess & (lab == 1)).sum() / (guess | (lab == 1)).sum()
        other = struct.labels[k + 4] == 1
        assert iou > 0.6 and iou > (guess & other).sum() / (guess | other).sum() + 0.1


def test_blender_dataset_sample(tmp_path) -> None:
    from pipeline.synth.dataset import open_dataset
    from pipeline.synth.factory import build_dataset, plan_samples

    plans = plan_samples(1, seed=0, shape=(6, 16, 16), voxel_size_nm=(10.0, 10.0, 10.0), families={"blobs": 1.0},
                         structure_ranges={"correlation_nm": 20.0}, render={"backend": "blender", "samples": 2})
    build_dataset(tmp_path / "b.zarr", plans, seed=0, executor="local", figures=False)
    ds = open_dataset(tmp_path / "b.zarr")
    assert ds["image"].shape == (1, 6, 16, 16) and str(ds["render_backend"].values[0]) == "blender"
    assert float(ds["image"].std()) > 5
