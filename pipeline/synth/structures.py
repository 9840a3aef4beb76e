"""Porous structures with known ground truth.

Families (all return a :class:`Structure` whose ``labels`` are uint8 with
1 = pore, 0 = solid):

``solid_spheres``
    The PuMA random-sphere algorithm: solid spheres with log-normal diameters
    placed at random in pore space, intersections allowed, until the target
    porosity is reached (a Boolean model of spheres).
``pore_spheres``
    The same with the phases swapped: spherical pores cut into solid.
``blobs``
    A thresholded gaussian random field (smooth, bicontinuous "blobs"),
    threshold set at the porosity quantile.
``agglomerates``
    Carbon-supported-catalyst-like aggregates: chains of touching primary
    particles (log-normal diameters) grown by a random walk.

:func:`random_fibers` (not a family of the synth stage) makes FiberForm-like
felts of straight solid fibres, mostly in the y-x plane, for benchmarks and
tests of the analysis on large pores.
The ``solid_spheres`` family has two generators: porelab's (log-normal
diameters, above) and, with ``generator="pumapy"``, NASA PuMA's own
``generate_random_spheres`` (one diameter, the median) when ``pumapy`` is
importable (it ships through conda-forge; PyPI's ``pumapy`` is another project).

Sphere stamping is local (each sphere touches only its bounding box), so
generation costs O(sum of sphere volumes), not O(spheres x volume).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "FAMILIES",
    "GENERATORS",
    "Family",
    "Structure",
    "lognormal_diameters",
    "random_spheres",
    "gaussian_blobs",
    "agglomerates",
    "pumapy_spheres",
    "pumapy_available",
    "generate",
    "random_fibers",
]

Family = Literal["solid_spheres", "pore_spheres", "blobs", "agglomerates"]
FAMILIES: tuple[str, ...] = ("solid_spheres", "pore_spheres", "blobs", "agglomerates")
GENERATORS: tuple[str, ...] = ("porelab", "pumapy")


@dataclass
class Structure:
    """A generated porous structure.

    Attributes
    ----------
    labels : numpy.ndarray of uint8, shape (z, y, x)
        1 = pore, 0 = solid.
    voxel_size_nm : (float, float, float)
        Voxel edge lengths z, y, x in nm.
    family : str
        Generator family.
    target_porosity : float
        Porosity asked for.
    spheres : numpy.ndarray, shape (n, 4)
        Placed spheres as rows (z, y, x, diameter) in nm, voxel centres at
        ``index * voxel_size``; empty for families without spheres.
    sphere_phase : {0, 1} or None
        Label value of the spheres (0 = solid spheres, 1 = pore spheres).
    params : dict
        The generator's parameters (JSON-able).
    """

    labels: np.ndarray
    voxel_size_nm: tuple[float, float, float]
    family: str
    target_porosity: float
    spheres: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    sphere_phase: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def porosity(self) -> float:
        """Pore voxels over all voxels."""
        return float(self.labels.mean(dtype=np.float64))


def _check_common(shape: Sequence[int], porosity: float, voxel_size_nm: Sequence[float]) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    shp = tuple(int(s) for s in shape)
    if len(shp) != 3 or min(shp) < 2:
        raise ValueError(f"shape must be three sizes >= 2 (z, y, x); got {tuple(shape)}")
    if not 0.0 < porosity < 1.0:
        raise ValueError(f"porosity must be between 0 and 1 (exclusive); got {porosity}")
    vs = tuple(float(v) for v in voxel_size_nm)
    if len(vs) != 3 or min(vs) <= 0:
        raise ValueError(f"voxel_size_nm must be three positive numbers; got {tuple(voxel_size_nm)}")
    return shp, vs  # type: ignore[return-value]


def lognormal_diameters(
    rng: np.random.Generator,
    n: int,
    median_nm: float,
    sigma: float,
    *,
    max_nm: float | None = None,
) -> np.ndarray:
    """Draw ``n`` diameters (nm) from a log-normal distribution.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
    median_nm : float
        Median diameter ``exp(mu)`` in nm.
    sigma : float
        Standard deviation of ``ln(d)`` (dimensionless); 0 gives equal spheres.
    max_nm : float, optional
        Upper truncation (values above are redrawn as ``max_nm``).
    """
    if median_nm <= 0:
        raise ValueError(f"median diameter must be > 0 nm; got {median_nm}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0; got {sigma}")
    d = median_nm * np.exp(sigma * rng.standard_normal(n))
    if max_nm is not None:
        d = np.minimum(d, max_nm)
    return d


class _Stamper:
    """Writes ellipsoidal voxel balls (spheres in nm) into a volume, tracking a phase count."""

    def __init__(self, labels: np.ndarray, voxel_size_nm: tuple[float, float, float], value: int) -> None:
        self.labels = labels
        self.vs = np.asarray(voxel_size_nm, dtype=np.float64)
        self.value = np.uint8(value)
        self.count = int(np.count_nonzero(labels == value))

    def stamp(self, center_nm: np.ndarray, diameter_nm: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Stamp one sphere; return (box view, newly set voxels) so it can be undone."""
        shape = self.labels.shape
        c = center_nm / self.vs  # voxel units
        r = 0.5 * diameter_nm / self.vs
        lo = np.maximum(np.ceil(c - r).astype(int), 0)
        hi = np.minimum(np.floor(c + r).astype(int) + 1, shape)
        if np.any(hi <= lo):
            return None
        zz = ((np.arange(lo[0], hi[0]) - c[0]) / r[0]) ** 2
        yy = ((np.arange(lo[1], hi[1]) - c[1]) / r[1]) ** 2
        xx = ((np.arange(lo[2], hi[2]) - c[2]) / r[2]) ** 2
        inside = (zz[:, None, None] + yy[None, :, None] + xx[None, None, :]) <= 1.0
        box = self.labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        new = inside & (box != self.value)
        self.count += int(np.count_nonzero(new))
        box[new] = self.value
        return box, new

    def undo(self, stamped: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Revert a :meth:`stamp`."""
        if stamped is None:
            return
        box, new = stamped
        box[new] = 1 - self.value
        self.count -= int(np.count_nonzero(new))


def _mean_sphere_volume_vox(median_nm: float, sigma: float, vs: tuple[float, float, float]) -> float:
    """E[pi d^3 / 6] of the log-normal, in voxels."""
    ed3 = median_nm**3 * math.exp(4.5 * sigma**2)
    return math.pi / 6.0 * ed3 / (vs[0] * vs[1] * vs[2])


def random_spheres(
    shape: Sequence[int] = (150, 150, 150),
    porosity: float = 0.5,
    median_nm: float = 100.0,
    sigma: float = 0.3,
    voxel_size_nm: Sequence[float] = (10.0, 10.0, 10.0),
    seed: int = 0,
    *,
    phase: Literal["solid", "pore"] = "solid",
    tolerance: float = 0.005,
    max_spheres: int = 2_000_000,
) -> Structure:
    """PuMA-style random spheres with log-normal diameters, overlaps allowed.

    Sphere centres are uniform over the volume padded by the largest radius
    (so the structure is statistically homogeneous up to the faces). Spheres
    are added in batches sized by the Boolean-model estimate
    ``n = -ln(f_now / f_target) * V / E[v]`` and one at a time near the end,
    stopping at the first sphere that brings the porosity within
    ``tolerance`` of the target. A sphere that would overshoot the target by
    more than ``tolerance`` is not placed (another is drawn); this matters
    only in volumes a few spheres across.

    Parameters
    ----------
    shape : (int, int, int)
        Voxels z, y, x (default 150^3 as in the paper).
    porosity : float
        Target pore fraction in (0, 1).
    median_nm, sigma : float
        Log-normal diameter distribution: median in nm, sigma of ln(d).
        Diameters are truncated at the smallest side of the volume; the median
        must not exceed half of it.
    voxel_size_nm : (float, float, float)
        Voxel size z, y, x in nm (anisotropic voxels give ellipsoids in voxel
        space, spheres in nm).
    seed : int
    phase : {"solid", "pore"}
        ``"solid"``: solid spheres in pore space (PuMA); ``"pore"``: spherical
        pores in solid.
    tolerance : float
        Stop once ``|porosity - target| <= tolerance``.
    max_spheres : int
        Safety limit.

    Returns
    -------
    Structure
        With ``spheres`` the placed spheres in nm.

    Raises
    ------
    ValueError
        On bad arguments, or when the target cannot be reached within 0.01
        (spheres far too large for the volume).
    """
    shp, vs = _check_common(shape, porosity, voxel_size_nm)
    if phase not in ("solid", "pore"):
        raise ValueError(f"phase must be 'solid' or 'pore'; got {phase!r}")
    rng = np.random.default_rng(seed)
    extent = np.asarray(shp, dtype=np.float64) * np.asarray(vs)
    max_nm = float(extent.min())
    if median_nm > 0.5 * max_nm:
        raise ValueError(
            f"median diameter {median_nm} nm is larger than half the volume's smallest side ({0.5 * max_nm} nm); "
            "use a larger shape or smaller spheres"
        )
    sphere_value = 0 if phase == "solid" else 1
    # fraction of the volume the spheres must cover
    target_cover = (1.0 - porosity) if phase == "solid" else porosity
    labels = np.full(shp, 1 - sphere_value, dtype=np.uint8)
    stamper = _Stamper(labels, vs, sphere_value)
    n_vox = labels.size
    ev = _mean_sphere_volume_vox(median_nm, sigma, vs)
    pad = min(0.5 * median_nm * math.exp(3 * sigma), max_nm / 2 + 0.5 * median_nm)
    lo = -pad
    span = extent - vs + 2 * pad
    # boolean-model correction for centres in the padding that miss the volume
    grow = float(np.prod(span) / np.prod(extent))
    placed: list[np.ndarray] = []
    total = 0
    rejected = 0
    while True:
        cover = stamper.count / n_vox
        if cover >= target_cover - tolerance:
            break
        need = -math.log(max(1.0 - target_cover, 1e-9) / max(1.0 - cover, 1e-9)) * n_vox / ev * grow
        batch = 1 if need < 20 else int(0.7 * need)
        if total + batch > max_spheres:
            raise ValueError(f"more than {max_spheres} spheres needed; the diameters are too small for the volume")
        d = lognormal_diameters(rng, batch, median_nm, sigma, max_nm=max_nm)
        centers = lo + rng.random((batch, 3)) * span
        used = batch
        keep = np.ones(batch, dtype=bool)
        for j in range(batch):
            stamped = stamper.stamp(centers[j], float(d[j]))
            cover = stamper.count / n_vox
            if cover > target_cover + tolerance and rejected < 200:
                # this sphere would overshoot the target: draw another one instead
                stamper.undo(stamped)
                keep[j] = False
                rejected += 1
            if cover >= target_cover - tolerance and keep[j]:
                used = j + 1
                break
        keep = keep[:used]
        placed.append(np.column_stack([centers[:used], d[:used]])[keep])
        total += used
    spheres = np.concatenate(placed) if placed else np.zeros((0, 4))
    struct = Structure(
        labels=labels,
        voxel_size_nm=vs,
        family="solid_spheres" if phase == "solid" else "pore_spheres",
        target_porosity=float(porosity),
        spheres=spheres,
        sphere_phase=sphere_value,
        params={"median_nm": float(median_nm), "sigma": float(sigma), "phase": phase, "seed": int(seed)},
    )
    if abs(struct.porosity - porosity) > 0.01:
        raise ValueError(
            f"porosity {struct.porosity:.3f} missed the target {porosity:.3f} by more than 0.01; "
            f"spheres of median {median_nm} nm are too large for a {shp} volume of {vs} nm voxels"
        )
    return struct


def gaussian_blobs(
    shape: Sequence[int] = (150, 150, 150),
    porosity: float = 0.5,
    correlation_nm: float = 60.0,
    voxel_size_nm: Sequence[float] = (10.0, 10.0, 10.0),
    seed: int = 0,
) -> Structure:
    """Thresholded gaussian random field: white noise smoothed with a gaussian of
    ``correlation_nm`` (standard deviation, nm), pore where the field is above its
    ``1 - porosity`` quantile. Porosity is exact to one voxel."""
    shp, vs = _check_common(shape, porosity, voxel_size_nm)
    if correlation_nm <= 0:
        raise ValueError(f"correlation_nm must be > 0; got {correlation_nm}")
    import scipy.ndimage as ndi

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(shp, dtype=np.float32)
    field_ = ndi.gaussian_filter(noise, sigma=[correlation_nm / v for v in vs], mode="wrap")
    k = int(round(porosity * field_.size))
    flat = field_.ravel()
    thr = np.partition(flat, flat.size - k)[flat.size - k]
    labels = (field_ >= thr).astype(np.uint8)
    return Structure(
        labels=labels,
        voxel_size_nm=vs,
        family="blobs",
        target_porosity=float(porosity),
        params={"correlation_nm": float(correlation_nm), "seed": int(seed)},
    )


def agglomerates(
    shape: Sequence[int] = (150, 150, 150),
    porosity: float = 0.5,
    median_nm: float = 60.0,
    sigma: float = 0.25,
    voxel_size_nm: Sequence[float] = (10.0, 10.0, 10.0),
    seed: int = 0,
    *,
    particles_per_aggregate: float = 12.0,
    overlap: float = 0.15,
    tolerance: float = 0.005,
) -> Structure:
    """Aggregates of touching primary particles (like carbon-supported catalyst).

    Each aggregate starts at a uniform random point; every further particle
    (log-normal diameter) touches a randomly chosen earlier particle of its
    aggregate, at centre distance ``(r_i + r_j) * (1 - overlap)`` in a uniform
    random direction. Aggregate sizes are ``1 + Poisson(particles_per_aggregate - 1)``.
    Particles are added until the porosity is within ``tolerance`` of the target.
    """
    shp, vs = _check_common(shape, porosity, voxel_size_nm)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1); got {overlap}")
    if particles_per_aggregate < 1:
        raise ValueError(f"particles_per_aggregate must be >= 1; got {particles_per_aggregate}")
    rng = np.random.default_rng(seed)
    extent = np.asarray(shp, dtype=np.float64) * np.asarray(vs)
    max_nm = 0.5 * float(extent.min())
    labels = np.ones(shp, dtype=np.uint8)
    stamper = _Stamper(labels, vs, 0)
    target_cover = 1.0 - porosity
    n_vox = labels.size
    placed: list[tuple[float, float, float, float]] = []
    while stamper.count / n_vox < target_cover - tolerance:
        k = 1 + int(rng.poisson(max(particles_per_aggregate - 1, 0)))
        d = lognormal_diameters(rng, k, median_nm, sigma, max_nm=max_nm)
        centers = [rng.random(3) * extent]
        for j in range(1, k):
            parent = int(rng.integers(0, j))
            u = rng.standard_normal(3)
            u /= np.linalg.norm(u) + 1e-12
            dist = 0.5 * (d[j] + d[parent]) * (1 - overlap)
            centers.append(centers[parent] + u * dist)
        for j in range(k):
            stamper.stamp(centers[j], float(d[j]))
            placed.append((*centers[j], float(d[j])))
            if stamper.count / n_vox >= target_cover - tolerance:
                break
        if len(placed) > 2_000_000:
            raise ValueError("more than 2,000,000 particles needed; the particles are too small for the volume")
    struct = Structure(
        labels=labels,
        voxel_size_nm=vs,
        family="agglomerates",
        target_porosity=float(porosity),
        spheres=np.asarray(placed, dtype=np.float64).reshape(-1, 4),
        sphere_phase=0,
        params={
            "median_nm": float(median_nm),
            "sigma": float(sigma),
            "particles_per_aggregate": float(particles_per_aggregate),
            "overlap": float(overlap),
            "seed": int(seed),
        },
    )
    if abs(struct.porosity - porosity) > 0.01:
        raise ValueError(f"porosity {struct.porosity:.3f} missed the target {porosity:.3f} by more than 0.01")
    return struct


def pumapy_available() -> bool:
    """True when NASA's PuMA Python package (``pumapy`` with ``generate_random_spheres``) imports."""
    try:
        import pumapy  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return hasattr(pumapy, "generate_random_spheres")


def pumapy_spheres(
    shape: Sequence[int] = (150, 150, 150),
    porosity: float = 0.5,
    median_nm: float = 100.0,
    voxel_size_nm: Sequence[float] = (10.0, 10.0, 10.0),
    seed: int = 0,
) -> Structure:
    """NASA PuMA's ``generate_random_spheres`` (equal diameters, intersections allowed).

    PuMA draws with NumPy's global generator, so it is seeded with
    ``np.random.seed(seed)``. Its workspace marks solid with values above 0
    (``segmented=True`` gives 1); labels here are ``1 = pore``.

    Raises
    ------
    ImportError
        When pumapy is not importable (install it from conda-forge).
    """
    shp, vs = _check_common(shape, porosity, voxel_size_nm)
    if not pumapy_available():
        raise ImportError("pumapy (NASA PuMA, from conda-forge) is not importable")
    import pumapy  # type: ignore[import-not-found]

    if len(set(vs)) != 1:
        raise ValueError("pumapy generates on isotropic voxels only")
    diameter_vox = max(1, int(round(median_nm / vs[0])))
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        size = (shp[2], shp[1], shp[0])  # PuMA indexes (x, y, z)
        try:
            ws = pumapy.generate_random_spheres(size, diameter_vox, porosity, allow_intersect=True, segmented=True)
            segmented = True
        except TypeError:  # older PuMA: grayscale 0..255, no 'segmented'
            ws = pumapy.generate_random_spheres(size, diameter_vox, porosity, allow_intersect=True)
            segmented = False
    finally:
        np.random.set_state(state)
    matrix = np.transpose(np.asarray(ws.matrix), (2, 1, 0))
    solid = matrix > 0 if segmented else matrix >= 128
    labels = (~solid).astype(np.uint8)
    return Structure(
        labels=np.ascontiguousarray(labels),
        voxel_size_nm=vs,
        family="solid_spheres",
        target_porosity=float(porosity),
        sphere_phase=0,
        params={"median_nm": float(median_nm), "diameter_voxels": diameter_vox, "generator": "pumapy", "seed": int(seed)},
    )


def generate(
    family: str,
    *,
    shape: Sequence[int],
    porosity: float,
    voxel_size_nm: Sequence[float],
    seed: int,
    median_nm: float = 100.0,
    sigma: float = 0.3,
    correlation_nm: float = 60.0,
    particles_per_aggregate: float = 12.0,
    generator: str = "porelab",
) -> Structure:
    """Generate one structure of ``family`` (see the module docstring).

    ``generator="pumapy"`` makes ``solid_spheres`` with NASA PuMA (ImportError
    when it is not importable); other families ignore it.
    """
    if generator not in GENERATORS:
        raise ValueError(f"generator {generator!r} is unknown; expected one of {', '.join(GENERATORS)}")
    if family == "solid_spheres" and generator == "pumapy":
        return pumapy_spheres(shape, porosity, median_nm, voxel_size_nm, seed)
    if family == "solid_spheres":
        return random_spheres(shape, porosity, median_nm, sigma, voxel_size_nm, seed, phase="solid")
    if family == "pore_spheres":
        return random_spheres(shape, porosity, median_nm, sigma, voxel_size_nm, seed, phase="pore")
    if family == "blobs":
        return gaussian_blobs(shape, porosity, correlation_nm, voxel_size_nm, seed)
    if family == "agglomerates":
        return agglomerates(
            shape, porosity, median_nm, sigma, voxel_size_nm, seed, particles_per_aggregate=particles_per_aggregate
        )
    raise ValueError(f"structure family {family!r} is unknown; expected one of {', '.join(FAMILIES)}")


def random_fibers(
    shape: Sequence[int] = (150, 150, 150),
    porosity: float = 0.9,
    diameter_nm: float = 100.0,
    voxel_size_nm: Sequence[float] = (10.0, 10.0, 10.0),
    seed: int = 0,
    *,
    elevation_deg: float = 10.0,
) -> Structure:
    """A felt of straight solid fibres (cylinders of ``diameter_nm``) crossing the volume, like NASA's FiberForm.

    Each fibre is a line through a uniform point of the volume, its direction
    uniform in azimuth in the y-x plane and tilted out of it by a normal angle
    of standard deviation ``elevation_deg``; fibres are added until the
    porosity drops to ``porosity`` (the last one overshoots by at most one fibre).
    A voxel is solid when its centre is within ``diameter_nm / 2`` of an axis.
    """
    shp, vs = _check_common(shape, porosity, voxel_size_nm)
    if diameter_nm <= 0:
        raise ValueError(f"diameter_nm must be > 0; got {diameter_nm}")
    rng = np.random.default_rng(seed)
    v = np.asarray(vs)
    labels = np.ones(shp, np.uint8)
    pore = labels.size
    target = porosity * labels.size
    rad = diameter_nm / 2
    n = 0
    while pore > target:
        az = rng.uniform(0.0, 2 * math.pi)
        el = math.radians(rng.normal(0.0, elevation_deg))
        d = np.array([math.sin(el), math.cos(el) * math.sin(az), math.cos(el) * math.cos(az)])
        p = rng.random(3) * (np.asarray(shp) - 1) * v  # a point of the axis (nm)
        n += 1
        ax = int(np.argmax(np.abs(d) / v * v.max()))
        o1, o2 = (a for a in range(3) if a != ax)
        ext = rad / max(abs(d[ax]), 1e-9) + v.max()  # half width of the fibre's section across a slice
        for s in range(shp[ax]):
            q = p + (s * v[ax] - p[ax]) / d[ax] * d  # the axis in slice s
            lo1, hi1 = max(0, int((q[o1] - ext) // v[o1])), min(shp[o1], int((q[o1] + ext) // v[o1]) + 2)
            lo2, hi2 = max(0, int((q[o2] - ext) // v[o2])), min(shp[o2], int((q[o2] + ext) // v[o2]) + 2)
            if lo1 >= hi1 or lo2 >= hi2:
                continue
            g1 = (np.arange(lo1, hi1) * v[o1] - p[o1])[:, None]
            g2 = (np.arange(lo2, hi2) * v[o2] - p[o2])[None, :]
            gs = s * v[ax] - p[ax]
            along = gs * d[ax] + g1 * d[o1] + g2 * d[o2]
            inside = gs * gs + g1 * g1 + g2 * g2 - along * along <= rad * rad
            idx: list[Any] = [0, 0, 0]
            idx[ax], idx[o1], idx[o2] = s, slice(lo1, hi1), slice(lo2, hi2)
            sub = labels[tuple(idx)]
            pore -= int(sub[inside].sum())
            sub[inside] = 0
    return Structure(
        labels=labels,
        voxel_size_nm=vs,
        family="fibers",
        target_porosity=float(porosity),
        params={"diameter_nm": float(diameter_nm), "elevation_deg": float(elevation_deg), "fibres": n, "seed": int(seed)},
    )
