"""Size distributions: local thickness is exact on spheres; fits recover the generator's log-normal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.synth.psd import fit_lognormal, local_thickness, plot_psd, sphere_phase_fit
from pipeline.synth.structures import random_spheres

# Stated tolerance of the Fig. 4 check: the fitted number median within 15 % of
# the input median and the fitted sigma within 0.08 of the input sigma.
MEDIAN_REL_TOL = 0.15
SIGMA_ABS_TOL = 0.08


@pytest.mark.parametrize("radius", [3.0, 5.5, 9.0])
def test_local_thickness_of_a_ball_is_its_diameter(radius: float) -> None:
    n = int(2 * radius) + 8
    z, y, x = np.ogrid[:n, :n, :n]
    c = n // 2  # centred on a voxel; off-centre balls measure up to ~1.5 voxels thinner
    ball = (z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2 <= radius**2
    lt = local_thickness(ball, (5.0, 5.0, 5.0))
    assert np.allclose(lt[ball], lt[ball][0])
    assert lt[ball][0] == pytest.approx(2 * radius * 5.0, rel=0.06)
    assert np.all(lt[~ball] == 0)


def test_discretisation_correction_centres_random_balls() -> None:
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(12):
        r = rng.uniform(5, 9)
        n = int(2 * r) + 8
        c = n / 2 + rng.uniform(-0.5, 0.5, 3)
        z, y, x = np.ogrid[:n, :n, :n]
        ball = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r**2
        raw = local_thickness(ball, (1.0, 1.0, 1.0))
        fixed = local_thickness(ball, (1.0, 1.0, 1.0), correct_discretisation=True)
        errors.append((raw[ball].max() - 2 * r, fixed[ball].max() - 2 * r))
    raw_err, fixed_err = np.array(errors).T
    assert raw_err.mean() < -0.5  # the grid makes balls look thinner ...
    assert abs(fixed_err.mean()) < 0.3  # ... and the correction removes that on average


def test_fit_lognormal_recovers_parameters() -> None:
    d = 80.0 * np.exp(0.4 * np.random.default_rng(1).standard_normal(20000))
    fit = fit_lognormal(d, volume_weighted=False)
    assert fit.median_nm == pytest.approx(80.0, rel=0.02)
    assert fit.sigma == pytest.approx(0.4, abs=0.01)
    with pytest.raises(ValueError):
        fit_lognormal(np.array([1.0]))


@pytest.mark.parametrize(
    "phase, porosity, median_nm, sigma, seed",
    [("pore", 0.25, 100.0, 0.3, 1), ("solid", 0.55, 100.0, 0.3, 2), ("solid", 0.6, 140.0, 0.2, 3)],
)
def test_sphere_phase_fit_matches_inputs(phase: str, porosity: float, median_nm: float, sigma: float, seed: int) -> None:
    s = random_spheres((112, 112, 112), porosity, median_nm, sigma, (10.0, 10.0, 10.0), seed=seed, phase=phase)
    values, fit = sphere_phase_fit(s.labels, s.sphere_phase, s.voxel_size_nm, margin_nm=0.5 * median_nm * np.exp(2 * sigma))
    assert values.size > 1000
    assert fit.number_median_nm == pytest.approx(median_nm, rel=MEDIAN_REL_TOL)
    assert fit.sigma == pytest.approx(sigma, abs=SIGMA_ABS_TOL)


def test_fit_detects_a_different_distribution() -> None:
    s = random_spheres((96, 96, 96), 0.6, 160.0, 0.15, (10.0, 10.0, 10.0), seed=4, phase="solid")
    _, fit = sphere_phase_fit(s.labels, 0, s.voxel_size_nm, margin_nm=100.0)
    assert abs(fit.number_median_nm - 100.0) / 100.0 > MEDIAN_REL_TOL


def test_plot_is_written(tmp_path: Path) -> None:
    d = 80.0 * np.exp(0.3 * np.random.default_rng(2).standard_normal(500))
    out = plot_psd(tmp_path / "psd.png", [{"values": d, "fit": fit_lognormal(d), "label": "x", "input": (80.0, 0.3)}])
    assert out.stat().st_size > 5000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_local_thickness_is_the_radius_sweep_on_geometric_radii() -> None:
    """Same values as one distance transform per radius (the definition), on this module's 40 geometric radii."""
    from pipeline.analyze.thickness import EDGE_CORRECTION_VOXELS, local_thickness_sweep

    s = random_spheres((40, 56, 56), 0.45, 100.0, 0.3, (10.0, 10.0, 5.0), seed=5)
    m = s.labels == 1
    before = m.copy()
    got = local_thickness(m, s.voxel_size_nm)
    np.testing.assert_array_equal(m, before)
    import edt

    rmax = float(edt.edt(m, anisotropy=s.voxel_size_nm, black_border=False).max())
    radii = np.unique(np.geomspace(5.0, rmax, 40))
    want = local_thickness_sweep(m, s.voxel_size_nm, radii=radii)
    want[m] -= np.float32(EDGE_CORRECTION_VOXELS * 5.0)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.all(got[m] >= 10.0) and np.all(got[~m] == 0)
