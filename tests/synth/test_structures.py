"""Structure families: porosity on target, labels convention, sphere lists, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.synth.structures import (
    agglomerates,
    gaussian_blobs,
    generate,
    lognormal_diameters,
    pumapy_available,
    pumapy_spheres,
    random_spheres,
)

SHAPE = (40, 48, 44)
VS = (10.0, 10.0, 10.0)


@pytest.mark.parametrize("family", ["solid_spheres", "pore_spheres", "blobs", "agglomerates"])
@pytest.mark.parametrize("porosity", [0.25, 0.5, 0.7])
def test_porosity_is_on_target(family: str, porosity: float) -> None:
    s = generate(family, shape=SHAPE, porosity=porosity, voxel_size_nm=VS, seed=4, median_nm=70.0, sigma=0.3, correlation_nm=30.0)
    assert s.labels.dtype == np.uint8 and s.labels.shape == SHAPE
    assert set(np.unique(s.labels)) <= {0, 1}
    assert abs(s.porosity - porosity) <= 0.01
    assert s.porosity == pytest.approx(float((s.labels == 1).mean()))


def test_same_seed_same_structure_other_seed_other() -> None:
    a = random_spheres(SHAPE, 0.5, 60.0, 0.3, VS, seed=1)
    b = random_spheres(SHAPE, 0.5, 60.0, 0.3, VS, seed=1)
    c = random_spheres(SHAPE, 0.5, 60.0, 0.3, VS, seed=2)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.spheres, b.spheres)
    assert (a.labels != c.labels).mean() > 0.1


@pytest.mark.parametrize("phase, value", [("solid", 0), ("pore", 1)])
def test_sphere_list_matches_labels(phase: str, value: int) -> None:
    s = random_spheres(SHAPE, 0.45, 80.0, 0.25, (10.0, 8.0, 8.0), seed=3, phase=phase)
    assert s.sphere_phase == value and s.spheres.shape[1] == 4 and len(s.spheres) > 5
    # every voxel inside a listed sphere has the sphere phase ...
    z, y, x = np.meshgrid(*(np.arange(n) * v for n, v in zip(SHAPE, (10.0, 8.0, 8.0))), indexing="ij")
    covered = np.zeros(SHAPE, bool)
    for cz, cy, cx, d in s.spheres:
        covered |= (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= (d / 2) ** 2
    assert np.all(s.labels[covered] == value)
    # ... and no voxel of the sphere phase lies outside every sphere
    assert np.all(covered[s.labels == value])


def test_diameters_follow_the_lognormal() -> None:
    s = random_spheres((96, 96, 96), 0.5, 60.0, 0.35, VS, seed=5)
    d = s.spheres[:, 3]
    assert np.exp(np.log(d).mean()) == pytest.approx(60.0, rel=0.05)
    assert np.log(d).std() == pytest.approx(0.35, abs=0.03)
    rng = np.random.default_rng(0)
    assert lognormal_diameters(rng, 10, 50.0, 0.5, max_nm=60.0).max() <= 60.0


def test_agglomerates_are_chains_of_touching_particles() -> None:
    s = agglomerates((48, 48, 48), 0.6, 60.0, 0.1, VS, seed=2, particles_per_aggregate=8)
    c = s.spheres[:, :3]
    r = s.spheres[:, 3] / 2
    # most particles touch another one (nearest centre closer than the sum of radii)
    dist = np.linalg.norm(c[:, None] - c[None], axis=-1) + np.eye(len(c)) * 1e9
    touching = (dist <= (r[:, None] + r[None]) * 1.0001).any(axis=1)
    assert touching.mean() > 0.8


def test_blobs_have_the_correlation_length() -> None:
    fine = gaussian_blobs((48, 48, 48), 0.5, 20.0, VS, seed=1)
    coarse = gaussian_blobs((48, 48, 48), 0.5, 60.0, VS, seed=1)

    def interface(lab: np.ndarray) -> float:
        return float((np.diff(lab.astype(np.int8), axis=2) != 0).mean())

    assert interface(fine.labels) > 1.8 * interface(coarse.labels)


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="porosity"):
        random_spheres(SHAPE, 1.2, 50.0, 0.3, VS)
    with pytest.raises(ValueError, match="shape"):
        random_spheres((10, 10), 0.5, 50.0, 0.3, VS)
    with pytest.raises(ValueError, match="unknown"):
        generate("cubes", shape=SHAPE, porosity=0.5, voxel_size_nm=VS, seed=0)
    with pytest.raises(ValueError, match="larger than half"):
        random_spheres((8, 8, 8), 0.5, 2000.0, 0.0, VS, seed=0)


def test_pumapy_generator_when_importable() -> None:
    if not pumapy_available():
        pytest.skip("NASA pumapy (conda-forge) is not importable here")
    s = generate("solid_spheres", shape=(40, 40, 40), porosity=0.5, voxel_size_nm=VS, seed=1, median_nm=80.0, generator="pumapy")
    assert s.labels.dtype == np.uint8 and abs(s.porosity - 0.5) <= 0.02  # PuMA's own stopping rule
    assert s.params["generator"] == "pumapy"
    np.testing.assert_array_equal(s.labels, pumapy_spheres((40, 40, 40), 0.5, 80.0, VS, seed=1).labels)


def test_pumapy_generator_absent_is_an_import_error() -> None:
    if pumapy_available():
        pytest.skip("pumapy is importable here")
    with pytest.raises(ImportError, match="conda-forge"):
        generate("solid_spheres", shape=SHAPE, porosity=0.5, voxel_size_nm=VS, seed=0, generator="pumapy")
