"""Built-in renderer: slice pairing, shine-through with depth, artefacts, drift, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.synth.render_builtin import RENDER_DEFAULTS, render_builtin
from pipeline.synth.structures import random_spheres

CLEAN = {"drift_px": 0.0, "dose": 1e7, "read_noise": 0.0, "curtain_amp": 0.0, "charging_amp": 0.0,
         "gradient_amp": 0.0, "scanline_amp": 0.0, "blur_px": 0.0, "texture_amp": 0.0}


@pytest.fixture(scope="module")
def struct():
    return random_spheres((40, 56, 56), 0.5, 90.0, 0.3, (10.0, 10.0, 10.0), seed=7)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_image_k_pairs_with_labels_k(struct) -> None:
    r = render_builtin(struct.labels, struct.voxel_size_nm, {**CLEAN, "deep_level": 0.3}, seed=1)
    assert r.image.dtype == np.uint8 and r.image.shape == struct.labels.shape
    np.testing.assert_array_equal(r.labels, struct.labels)  # no drift: labels untouched
    k = 20
    thr = 0.5 * (r.image[k][r.labels[k] == 0].mean() + r.image[k][r.labels[k] == 1].mean())
    pore_guess = r.image[k] < thr
    same = _iou(pore_guess, struct.labels[k] == 1)
    assert same > 0.75
    for other in (k - 3, k + 3):
        assert _iou(pore_guess, struct.labels[other] == 1) < same - 0.1


def _depth_behind(labels: np.ndarray, angle_deg: float, vs: float = 10.0, max_steps: int = 60) -> np.ndarray:
    """Distance (nm) along the viewing ray from each voxel to the first solid voxel (reference loop)."""
    a = math.radians(angle_deg)
    Z, Y, X = labels.shape
    depth = np.full(labels.shape, np.inf)
    for t in range(1, max_steps):
        dz, dy = int(round(t * math.cos(a) * 0.5)), int(round(t * math.sin(a) * 0.5))
        zz = np.clip(np.arange(Z) + dz, 0, Z - 1)
        yy = np.clip(np.arange(Y) + dy, 0, Y - 1)
        solid = labels[zz][:, yy] == 0
        hit = solid & np.isinf(depth)
        depth[hit] = t * 0.5 * vs
    return depth


def test_pores_show_material_behind_them_darker_with_depth(struct) -> None:
    p = {**CLEAN, "depth_nm": 40.0, "pore_floor": 0.03, "edge_amp": 0.0}
    r = render_builtin(struct.labels, struct.voxel_size_nm, p, seed=1)
    img = r.image.astype(float)
    depth = _depth_behind(struct.labels, RENDER_DEFAULTS["sem_angle_deg"])
    inner = (slice(2, 30), slice(2, 40), slice(2, 54))  # away from the volume's far faces
    pore = (struct.labels == 1)[inner]
    d, v = depth[inner][pore], img[inner][pore]
    near, far = v[d <= 20].mean(), v[(d >= 60) & np.isfinite(d)].mean()
    solid = img[inner][~pore].mean()
    assert near > far + 10  # shine-through fades with depth ...
    assert near > 0.03 * 255 + 20  # ... so pores near material are not black ...
    assert solid > near  # ... and the cut face is still the brightest
    # no shine-through: pores fall to the floor
    flat = render_builtin(struct.labels, struct.voxel_size_nm, {**p, "deep_level": 0.0}, seed=1).image.astype(float)
    assert np.median(flat[inner][pore]) < 0.05 * 255  # (edge pixels are anti-aliased with the face)


def test_same_seed_same_image_and_input_untouched(struct) -> None:
    before = struct.labels.copy()
    a = render_builtin(struct.labels, struct.voxel_size_nm, {}, seed=3)
    b = render_builtin(struct.labels, struct.voxel_size_nm, {}, seed=3)
    c = render_builtin(struct.labels, struct.voxel_size_nm, {}, seed=4)
    np.testing.assert_array_equal(a.image, b.image)
    assert (a.image != c.image).mean() > 0.3
    np.testing.assert_array_equal(struct.labels, before)


def test_drift_moves_image_and_labels_together(struct) -> None:
    r = render_builtin(struct.labels, struct.voxel_size_nm, {**CLEAN, "drift_px": 1.5}, seed=2)
    assert r.drift_px.shape == (40, 2) and np.abs(r.drift_px).max() >= 1
    assert np.all(r.drift_px[0] == 0)
    k = int(np.argmax(np.abs(r.drift_px).sum(axis=1)))
    dy, dx = r.drift_px[k]
    m = int(np.abs(r.drift_px).max())
    inner = (slice(m, 56 - m), slice(m, 56 - m))
    moved = np.roll(struct.labels[k], (dy, dx), axis=(0, 1))  # equal away from the mirrored border
    np.testing.assert_array_equal(r.labels[k][inner], moved[inner])
    ref = render_builtin(struct.labels, struct.voxel_size_nm, CLEAN, seed=2).image[k].astype(int)
    assert np.abs(r.image[k].astype(int)[inner] - np.roll(ref, (dy, dx), axis=(0, 1))[inner]).mean() < 3


def test_curtaining_makes_stripes_along_y(struct) -> None:
    base = {**CLEAN, "texture_amp": 0.0}
    plain = render_builtin(struct.labels, struct.voxel_size_nm, base, seed=5).image.astype(float)
    striped = render_builtin(struct.labels, struct.voxel_size_nm, {**base, "curtain_amp": 0.25, "curtain_count": 20}, seed=5).image.astype(float)
    diff = striped - plain
    # the change is constant down a column (stripes along y) and varies across x
    assert diff[10, 50, :].std() > 3  # varies across x
    assert np.corrcoef(diff[10, 35, :], diff[10, 50, :])[0, 1] > 0.8


def test_noise_grows_as_dose_falls(struct) -> None:
    def noise(dose: float) -> float:
        p = {**CLEAN, "dose": dose, "read_noise": 0.0}
        a = render_builtin(struct.labels, struct.voxel_size_nm, p, seed=1).image.astype(float)
        b = render_builtin(struct.labels, struct.voxel_size_nm, {**p}, seed=2).image.astype(float)
        return float((a - b).std())

    assert noise(20.0) > 1.8 * noise(80.0) > 0


def test_charging_gradient_and_blur_change_the_image(struct) -> None:
    ref = render_builtin(struct.labels, struct.voxel_size_nm, CLEAN, seed=1).image.astype(float)
    charged = render_builtin(struct.labels, struct.voxel_size_nm, {**CLEAN, "charging_amp": 0.4, "charging_coverage": 0.3}, seed=1).image.astype(float)
    assert (charged - ref).min() >= -1 and (charged - ref).max() > 40  # only brighter, in patches
    assert ((charged - ref) > 5).mean() < 0.6
    graded = render_builtin(struct.labels, struct.voxel_size_nm, {**CLEAN, "gradient_amp": 0.4}, seed=1).image.astype(float)
    ratio = graded.mean(axis=0) / np.maximum(ref.mean(axis=0), 1)
    assert ratio.max() - ratio.min() > 0.3
    blurred = render_builtin(struct.labels, struct.voxel_size_nm, {**CLEAN, "blur_px": 2.0}, seed=1).image.astype(float)
    assert np.abs(np.diff(blurred, axis=2)).mean() < 0.7 * np.abs(np.diff(ref, axis=2)).mean()


def test_anisotropic_voxels_and_bad_parameters(struct) -> None:
    r = render_builtin(struct.labels, (20.0, 10.0, 10.0), CLEAN, seed=1)
    assert r.image.shape == struct.labels.shape
    with pytest.raises(ValueError, match="unknown render parameters"):
        render_builtin(struct.labels, (10, 10, 10), {"brightness": 1.0})
    with pytest.raises(ValueError, match="outside"):
        render_builtin(struct.labels, (10, 10, 10), {"dose": -1.0})


@pytest.mark.gpu
def test_cupy_matches_numpy(struct) -> None:
    cupy = pytest.importorskip("cupy")
    from pipeline.backend import gpu_available

    if not gpu_available():
        pytest.skip("no usable CUDA device")
    a = render_builtin(struct.labels, struct.voxel_size_nm, CLEAN, seed=1).image.astype(int)
    b = render_builtin(cupy.asarray(struct.labels), struct.voxel_size_nm, CLEAN, seed=1).image.astype(int)
    assert np.abs(a - b).mean() < 1.0


def test_second_material_darkens_part_of_the_solid(struct) -> None:
    one = render_builtin(struct.labels, struct.voxel_size_nm, CLEAN, seed=1).image.astype(float)
    two = render_builtin(struct.labels, struct.voxel_size_nm, {**CLEAN, "phase_fraction": 0.4, "phase_level": 0.5}, seed=1).image.astype(float)
    solid = struct.labels == 0
    ratio = two[solid] / np.maximum(one[solid], 1)
    assert 0.2 < (ratio < 0.75).mean() < 0.6  # about 40 % of the solid at half brightness
    assert (ratio > 0.95).mean() > 0.35
