"""Built-in FIB-SEM renderer: array based, every slice of a structure at once.

Geometry
--------
The ion beam mills the block face by face along +z; for slice ``k`` the cut
face is the plane ``z = k`` and the material left is ``z >= k``. The electron
beam looks at the face at ``sem_angle_deg`` from the face normal (52° as in the
paper), tilted towards +y (the top of the image is the sample surface), so a
viewing ray from face pixel (y, x) runs along ``d = (cos a, sin a, 0)`` in
(z, y, x) nanometres. Images are drawn on the face grid (tilt already
corrected), so ``image[k]`` pairs pixel for pixel with ``labels[k]``.

Signal model (all brightness values in [0, 1] before the detector)
----------------------------------------------------------------
* Solid on the face: ``solid_level`` x a 3D material texture (optionally two
  materials: domains of ``phase_fraction`` of the solid at ``phase_level``
  relative brightness, like ionomer or carbon beside catalyst), brighter near pore
  edges (``edge_amp`` over ``edge_nm``): secondary electrons escape through
  the nearby free surface.
* Pore on the face: the ray continues into the pore and meets material deeper
  down (soft ray march with transmittance over the anti-aliased solid
  fraction). What it meets shows as ``deep_level x solid_level x shading x
  exp(-depth / depth_nm)`` on top of ``pore_floor``: pore-back / shine-through, so pores are
  not simply black.
* Shading of the surfaces met: secant law of the secondary-electron yield
  (grazing surfaces bright, ``orientation_amp``) and a side detector
  (surfaces facing it brighter, ``detector_amp``).
* Artefacts: charging (bright, slowly varying patches and scan-line jitter),
  curtaining (stripes along y, fixed in x, slowly changing from slice to
  slice), an illumination gradient, slice-to-slice stage drift (an integer
  random walk applied to image and labels alike and stored), gaussian beam
  blur, then Poisson (shot, ``dose`` electrons per unit brightness) and
  gaussian (read) noise, gain and offset, and 8-bit quantisation.

Arrays may be NumPy or CuPy (the module follows the labels' array module);
random fields are drawn on the host from the given seed so both give the same
structure of randomness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.backend import ndimage_of, to_numpy, xp_of

__all__ = ["RENDER_DEFAULTS", "RenderResult", "render_builtin", "sem_signal", "sem_artifacts", "check_render_params"]

#: Every parameter of the built-in renderer with its default value (units in the names).
RENDER_DEFAULTS: dict[str, float] = {
    "sem_angle_deg": 52.0,  # angle between face normal and electron beam
    "depth_nm": 60.0,  # attenuation length of material seen through pores
    "deep_level": 0.55,  # brightness of material met just behind the face, relative to solid_level
    "pore_floor": 0.06,  # brightness of a pore where nothing is met
    "solid_level": 0.72,  # brightness of solid on the face
    "texture_amp": 0.08,  # relative amplitude of the material texture
    "texture_nm": 15.0,  # correlation length of the texture
    "phase_fraction": 0.0,  # share of the solid made of a second, darker material
    "phase_level": 0.75,  # brightness of the second material relative to the first
    "phase_nm": 40.0,  # size of the second material's domains
    "edge_amp": 0.35,  # relative brightening of solid at pore edges
    "edge_nm": 12.0,  # width of the edge brightening
    "orientation_amp": 0.5,  # secant-law strength on surfaces met in pores
    "detector_amp": 0.2,  # side-detector shading strength
    "curtain_amp": 0.05,  # amplitude of curtaining stripes
    "curtain_count": 12.0,  # number of stripes
    "charging_amp": 0.1,  # brightness of charging patches
    "charging_nm": 300.0,  # size of charging patches
    "charging_coverage": 0.15,  # fraction of the image covered by charging
    "scanline_amp": 0.01,  # std of per-scan-line offsets
    "gradient_amp": 0.15,  # illumination gradient across the field of view
    "drift_px": 0.3,  # std of the per-slice drift step (pixels)
    "blur_px": 0.8,  # gaussian beam blur sigma (pixels)
    "dose": 60.0,  # detected electrons per unit brightness (shot noise)
    "read_noise": 0.02,  # gaussian detector noise std
    "gain": 1.0,  # detector gain
    "offset": 0.0,  # detector offset
}

_BOUNDS: dict[str, tuple[float, float]] = {
    "sem_angle_deg": (0.0, 80.0),
    "depth_nm": (1e-3, 1e5),
    "deep_level": (0.0, 2.0),
    "pore_floor": (0.0, 1.0),
    "solid_level": (0.0, 1.0),
    "texture_amp": (0.0, 1.0),
    "texture_nm": (1e-3, 1e5),
    "phase_fraction": (0.0, 1.0),
    "phase_level": (0.0, 2.0),
    "phase_nm": (1e-3, 1e5),
    "edge_amp": (0.0, 5.0),
    "edge_nm": (1e-3, 1e5),
    "orientation_amp": (0.0, 5.0),
    "detector_amp": (0.0, 1.0),
    "curtain_amp": (0.0, 1.0),
    "curtain_count": (0.0, 1000.0),
    "charging_amp": (0.0, 2.0),
    "charging_nm": (1e-3, 1e6),
    "charging_coverage": (0.0, 1.0),
    "scanline_amp": (0.0, 1.0),
    "gradient_amp": (0.0, 1.0),
    "drift_px": (0.0, 50.0),
    "blur_px": (0.0, 50.0),
    "dose": (1e-3, 1e9),
    "read_noise": (0.0, 1.0),
    "gain": (0.0, 10.0),
    "offset": (-1.0, 1.0),
}


@dataclass
class RenderResult:
    """Rendered slices.

    Attributes
    ----------
    image : numpy.ndarray of uint8, shape (z, y, x)
        ``image[k]`` is the SEM view of the cut face at ``z = k``.
    labels : numpy.ndarray of uint8, shape (z, y, x)
        The cut faces registered to the image (moved by the same drift), 1 = pore.
    drift_px : numpy.ndarray of int, shape (z, 2)
        Stage drift (dy, dx) in pixels applied to slice ``k``.
    params : dict
        The parameters used (defaults filled in).
    """

    image: np.ndarray
    labels: np.ndarray
    drift_px: np.ndarray
    params: dict[str, float]


def check_render_params(params: Mapping[str, Any]) -> dict[str, float]:
    """Fill defaults and check names and ranges; raises ValueError on a bad value."""
    unknown = sorted(set(params) - set(RENDER_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown render parameters {unknown}; expected some of {sorted(RENDER_DEFAULTS)}")
    out = dict(RENDER_DEFAULTS)
    for k, v in params.items():
        lo, hi = _BOUNDS[k]
        v = float(v)
        if not (lo <= v <= hi) or not math.isfinite(v):
            raise ValueError(f"render parameter {k}={v} is outside [{lo}, {hi}]")
        out[k] = v
    return out


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma_vox: Sequence[float], xp: Any, ndi: Any, *, coarse: int = 1) -> Any:
    """Unit-variance gaussian random field; drawn on a grid ``coarse`` times coarser, then zoomed."""
    small = tuple(shape) if coarse == 1 else tuple(max(2, int(math.ceil(s / coarse)) + 1) for s in shape)
    noise = xp.asarray(rng.standard_normal(small, dtype=np.float32))
    f = ndi.gaussian_filter(noise, sigma=[max(s / coarse, 0.0) for s in sigma_vox], mode="wrap")
    if coarse > 1:
        f = ndi.zoom(f, [coarse] * len(shape), order=1, mode="nearest", grid_mode=False)
        f = f[tuple(slice(0, s) for s in shape)]
    std = float(f.std())
    return (f - f.mean()) / (std if std > 0 else 1.0)


def _shifted(padded: Any, oz: float, oy: float, shape: tuple[int, int, int]) -> Any:
    """Bilinear read of ``padded`` at offsets (oz, oy) >= 0 voxels, cropped to ``shape``."""
    Z, Y, _ = shape
    iz, iy = int(math.floor(oz)), int(math.floor(oy))
    fz, fy = oz - iz, oy - iy
    a = padded[iz : iz + Z, iy : iy + Y]
    out = a * ((1 - fz) * (1 - fy))
    if fy > 1e-6:
        out += padded[iz : iz + Z, iy + 1 : iy + 1 + Y] * ((1 - fz) * fy)
    if fz > 1e-6:
        out += padded[iz + 1 : iz + 1 + Z, iy : iy + Y] * (fz * (1 - fy))
        if fy > 1e-6:
            out += padded[iz + 1 : iz + 1 + Z, iy + 1 : iy + 1 + Y] * (fz * fy)
    return out


def _shade_field(solid: Any, vs: tuple[float, float, float], d: np.ndarray, p: Mapping[str, float], ndi: Any, xp: Any) -> Any:
    """Brightness factor of a surface element met by a ray: secant law and side detector."""
    s = ndi.gaussian_filter(solid, sigma=[1.0 * min(vs) / v for v in vs])
    gz, gy, gx = (g / v for g, v in zip(xp.gradient(s), vs))
    norm = xp.sqrt(gz * gz + gy * gy + gx * gx)
    ok = norm > 1e-3
    norm = xp.where(ok, norm, 1.0)
    # gradient points into the solid; the outward normal is -grad/|grad|
    cos_inc = xp.where(ok, (gz * d[0] + gy * d[1]) / norm, 1.0)
    sec = 1.0 / xp.clip(cos_inc, 0.2, 1.0)  # secondary-electron yield ~ 1/cos(incidence)
    shade = 1.0 + p["orientation_amp"] * (sec - 1.0) / 4.0
    det = np.array([0.0, -0.8, 0.6])  # towards the top-right of the image
    n_dot_l = xp.where(ok, -(gy * det[1] + gx * det[2]) / norm, 0.0)
    shade *= 1.0 + p["detector_amp"] * n_dot_l
    return shade.astype(xp.float32)


def render_builtin(
    labels: Any,
    voxel_size_nm: Sequence[float] = (10.0, 10.0, 10.0),
    params: Mapping[str, float] | None = None,
    seed: int = 0,
) -> RenderResult:
    """Render every slice of a structure as a FIB-SEM image.

    Parameters
    ----------
    labels : uint8 array (z, y, x), NumPy or CuPy
        1 = pore, 0 = solid. Not modified.
    voxel_size_nm : (float, float, float)
        Voxel size z (slice thickness), y, x in nm; anisotropic allowed.
    params : mapping, optional
        Values for any of :data:`RENDER_DEFAULTS` (the rest default).
    seed : int
        Seed of every random field (texture, charging, curtains, drift, noise).

    Returns
    -------
    RenderResult
        uint8 images, drift-registered labels, drift and the parameters used.
    """
    p = check_render_params(params or {})
    if getattr(labels, "ndim", None) != 3:
        raise ValueError(f"labels must be 3D (z, y, x); got shape {getattr(labels, 'shape', None)}")
    vs = tuple(float(v) for v in voxel_size_nm)
    if len(vs) != 3 or min(vs) <= 0:
        raise ValueError(f"voxel_size_nm must be three positive numbers; got {voxel_size_nm}")
    rng = np.random.default_rng(seed)
    img = sem_signal(labels, vs, p, rng)
    return sem_artifacts(img, labels, vs, p, rng)


def sem_signal(labels: Any, voxel_size_nm: Sequence[float], p: Mapping[str, float], rng: np.random.Generator) -> Any:
    """Noise-free SEM brightness of every cut face (float32, about 0..1), before artefacts.

    Solid on the face bright and textured with brighter pore edges; pores show
    the material met deeper along the viewing ray, attenuated with depth and
    shaded by surface orientation. See the module docstring.
    """
    xp, ndi = xp_of(labels), ndimage_of(labels)
    vs = tuple(float(v) for v in voxel_size_nm)
    shape = tuple(int(s) for s in labels.shape)
    solid = (labels == 0).astype(xp.float32)
    # anti-aliased solid fraction
    occ = ndi.gaussian_filter(solid, sigma=[0.5 * min(vs) / v for v in vs])

    # material texture (fixed in 3D so it is coherent between slices) + fine grain
    tex = 1.0 + p["texture_amp"] * (
        0.7 * _smooth_noise(rng, shape, [p["texture_nm"] / v for v in vs], xp, ndi)
        + 0.3 * _smooth_noise(rng, shape, [0.6, 0.6, 0.6], xp, ndi)
    )

    # second material (ionomer / carbon beside catalyst): darker domains with soft borders
    if p["phase_fraction"] > 0 and p["phase_level"] != 1.0:
        f = _smooth_noise(rng, shape, [p["phase_nm"] / v for v in vs], xp, ndi, coarse=2)
        thr = float(np.quantile(to_numpy(f[:: max(1, shape[0] // 16), ::2, ::2]), 1.0 - p["phase_fraction"]))
        second = 1.0 / (1.0 + xp.exp(-(f - thr) / 0.15))
        tex = tex * (1.0 - (1.0 - p["phase_level"]) * second)

    # ---- pores: march along the viewing ray into the volume behind the face
    a = math.radians(p["sem_angle_deg"])
    d = np.array([math.cos(a), math.sin(a), 0.0])
    step_nm = 0.7 * min(vs[0], vs[1])
    max_depth = 4.0 * p["depth_nm"]
    n_steps = max(1, int(math.ceil(max_depth / step_nm)))
    pz = int(math.ceil(n_steps * step_nm * d[0] / vs[0])) + 2
    py = int(math.ceil(n_steps * step_nm * d[1] / vs[1])) + 2
    shade = _shade_field(solid, vs, d, p, ndi, xp) * tex
    pad = ((0, pz), (0, py), (0, 0))
    # beyond the volume the material goes on like its mirror image
    occ_p = xp.pad(occ, pad, mode="symmetric")
    lit_p = xp.pad(occ * shade, pad, mode="symmetric")
    trans = xp.ones(shape, dtype=xp.float32)
    acc = xp.zeros(shape, dtype=xp.float32)
    for t in range(1, n_steps + 1):
        depth = t * step_nm
        oz, oy = depth * d[0] / vs[0], depth * d[1] / vs[1]
        o = _shifted(occ_p, oz, oy, shape)
        lit = _shifted(lit_p, oz, oy, shape)
        acc += trans * lit * np.float32(math.exp(-depth / p["depth_nm"]))
        trans *= 1.0 - o
        if t % 8 == 0 and float(trans.max()) < 1e-3:
            break
    # material deep in a pore is seen through a spread of secondary-electron paths: softer
    acc = ndi.gaussian_filter(acc, sigma=[0.0, 0.7, 0.7])
    pore_view = p["pore_floor"] + p["deep_level"] * p["solid_level"] * acc

    # ---- the face: solid bright and textured, edges brighter
    edge_sigma = [0.0, p["edge_nm"] / vs[1], p["edge_nm"] / vs[2]]
    near_pore = ndi.gaussian_filter(1.0 - occ, sigma=edge_sigma)
    face = p["solid_level"] * tex * (1.0 + p["edge_amp"] * 2.0 * near_pore)
    return (occ * face + (1.0 - occ) * pore_view).astype(xp.float32)


def sem_artifacts(
    img: Any,
    labels: Any,
    voxel_size_nm: Sequence[float],
    p: Mapping[str, float],
    rng: np.random.Generator,
) -> RenderResult:
    """Add the instrument's artefacts to a clean signal and digitise it.

    Charging, scan-line jitter, curtaining, illumination gradient, beam blur,
    stage drift (applied to ``labels`` as well), gain/offset, Poisson-Gaussian
    noise, 8 bits. ``img`` (float, z, y, x) is not modified.
    """
    xp, ndi = xp_of(img), ndimage_of(img)
    vs = tuple(float(v) for v in voxel_size_nm)
    shape = tuple(int(s) for s in img.shape)
    Z, Y, X = shape
    img = img.astype(xp.float32, copy=True)

    # ---- charging: bright, slowly varying patches (slower along z) + scan-line jitter
    if p["charging_amp"] > 0 and p["charging_coverage"] > 0:
        cs = [3.0 * p["charging_nm"] / vs[0], p["charging_nm"] / vs[1], p["charging_nm"] / vs[2]]
        c = _smooth_noise(rng, shape, cs, xp, ndi, coarse=4)
        thr = float(np.quantile(to_numpy(c[:: max(1, Z // 16), ::4, ::4]), 1.0 - p["charging_coverage"]))
        patch = xp.clip(c - thr, 0.0, None)
        top = float(patch.max())
        if top > 0:
            img += p["charging_amp"] * (patch / top) ** 0.7
    if p["scanline_amp"] > 0:
        img += xp.asarray(rng.normal(0.0, p["scanline_amp"], (Z, Y, 1)).astype(np.float32))

    # ---- curtaining: stripes along y at fixed x, amplitude drifting slowly between slices
    k = int(round(p["curtain_count"]))
    if p["curtain_amp"] > 0 and k > 0:
        xs = rng.uniform(0, X, k)
        widths = np.exp(rng.uniform(math.log(0.7), math.log(5.0), k)) * max(1.0, X / 150)
        signs = rng.choice([-1.0, 1.0], k, p=[0.65, 0.35]) * rng.uniform(0.4, 1.0, k)
        start = rng.uniform(-0.3, 0.7, k) * Y
        walk = np.cumsum(rng.normal(0, 0.08, (Z, k)), axis=0)
        amp_zk = (signs[None, :] * np.exp(walk)).astype(np.float32)
        yy = np.arange(Y)[None, :]
        env_ky = (1.0 / (1.0 + np.exp(-(yy - start[:, None]) / (0.05 * Y)))).astype(np.float32)
        xx = np.arange(X)[None, :]
        prof_kx = np.exp(-0.5 * ((xx - xs[:, None]) / widths[:, None]) ** 2).astype(np.float32)
        curtains = np.einsum("zk,ky,kx->zyx", amp_zk, env_ky, prof_kx, optimize=True)
        img += p["curtain_amp"] * xp.asarray(curtains)

    # ---- illumination gradient, slowly changing with z
    if p["gradient_amp"] > 0:
        phi = rng.uniform(0, 2 * np.pi)
        gy = np.linspace(-1, 1, Y, dtype=np.float32)[:, None]
        gx = np.linspace(-1, 1, X, dtype=np.float32)[None, :]
        plane = math.cos(phi) * gy + math.sin(phi) * gx
        wob = 1.0 + 0.2 * np.sin(np.linspace(0, rng.uniform(0.5, 2.0) * np.pi, Z) + rng.uniform(0, 2 * np.pi))
        img *= 1.0 + p["gradient_amp"] * xp.asarray((wob[:, None, None] * plane[None]).astype(np.float32))

    # ---- beam blur
    if p["blur_px"] > 0:
        img = ndi.gaussian_filter(img, sigma=[0.0, p["blur_px"], p["blur_px"]])

    # ---- stage drift: integer random walk, image and labels moved alike
    steps = rng.normal(0.0, p["drift_px"], (Z, 2)) if p["drift_px"] > 0 else np.zeros((Z, 2))
    steps[0] = 0.0
    drift = np.rint(np.cumsum(steps, axis=0)).astype(np.int64)
    lab = labels
    if np.any(drift):
        img = _apply_drift(img, drift, xp)
        lab = _apply_drift(labels, drift, xp)

    # ---- detector: gain/offset, shot and read noise, 8 bits
    signal = xp.clip(p["gain"] * img + p["offset"], 0.0, None)
    counts = rng.poisson(to_numpy(signal).astype(np.float64) * p["dose"]).astype(np.float32) / np.float32(p["dose"])
    counts += rng.normal(0.0, p["read_noise"], shape).astype(np.float32)
    out = np.clip(np.rint(counts * 255.0), 0, 255).astype(np.uint8)
    return RenderResult(image=out, labels=to_numpy(lab).astype(np.uint8), drift_px=drift, params=dict(p))


def _apply_drift(vol: Any, drift: np.ndarray, xp: Any) -> Any:
    """Shift slice k by drift[k] = (dy, dx) pixels; what comes into view is the mirror image of the edge."""
    Z, Y, X = vol.shape
    m = int(np.abs(drift).max())
    padded = xp.pad(vol, ((0, 0), (m, m), (m, m)), mode="symmetric")
    out = xp.empty_like(vol)
    for k in range(Z):
        dy, dx = int(drift[k, 0]), int(drift[k, 1])
        out[k] = padded[k, m - dy : m - dy + Y, m - dx : m - dx + X]
    return out
