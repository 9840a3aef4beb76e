"""Augmentation of training batches, on top of the renderer's randomisation.

Geometric (to image and target alike): flips of the slice axes, 90° rotations
in the slice plane. Intensity (to the grey image channels only, never to a
probability channel): gamma, contrast and brightness, gaussian noise, gaussian
blur in the slice plane; values stay in [0, 1] like ``porelab preprocess``
output. The z order of slices is never flipped: material seen through a pore
lies deeper, in the slices that follow, and a 2.5D model may use that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["AugmentParams", "augment_batch"]


@dataclass(frozen=True)
class AugmentParams:
    """What augmentation does; every intensity step happens with probability ``p``.

    Attributes
    ----------
    flip_y, flip_x : bool
        Mirror the slice axes (each with probability 0.5).
    rot90 : bool
        Rotate by a random multiple of 90° in the slice plane (square patches).
    gamma : float
        ``x ** g`` with ``log g`` uniform in ``[-log gamma, log gamma]`` (1 = off).
    contrast : float
        ``(x - m) * a + m + b`` with ``a`` in ``[1 - contrast, 1 + contrast]``, ``b`` in ``[-contrast/2, contrast/2]``.
    noise : float
        Largest std of added gaussian noise (values in [0, 1]).
    blur : float
        Largest gaussian blur sigma in the slice plane, pixels.
    p : float
        Probability of each intensity step.
    """

    flip_y: bool = True
    flip_x: bool = True
    rot90: bool = True
    gamma: float = 1.5
    contrast: float = 0.25
    noise: float = 0.04
    blur: float = 1.0
    p: float = 0.5

    def tta_axes(self, dims: int) -> list[int]:
        """Network spatial axes that training flipped (for test-time flips)."""
        off = dims - 2
        return [a + off for a, on in ((0, self.flip_y), (1, self.flip_x)) if on]


def augment_batch(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, params: AugmentParams,
                  image_channels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Augmented copies of a batch.

    Parameters
    ----------
    x : ndarray (batch, channels, *spatial)
        Inputs in [0, 1]; the last two axes are the slice plane (y, x).
    y : ndarray (batch, 1, *spatial)
        Targets.
    rng : numpy Generator
    params : AugmentParams
    image_channels : sequence of int, optional
        Channels that are grey images (intensity steps apply to them alone);
        default all.
    """
    from scipy import ndimage

    x = np.array(x, dtype=np.float32, copy=True)
    y = np.array(y, dtype=np.float32, copy=True)
    chans = list(range(x.shape[1])) if image_channels is None else list(image_channels)
    ya, xa = x.ndim - 2, x.ndim - 1
    for b in range(x.shape[0]):
        xb, yb = x[b], y[b]
        if params.flip_y and rng.random() < 0.5:
            xb, yb = xb[..., ::-1, :], yb[..., ::-1, :]
        if params.flip_x and rng.random() < 0.5:
            xb, yb = xb[..., ::-1], yb[..., ::-1]
        if params.rot90 and xb.shape[-1] == xb.shape[-2]:
            k = int(rng.integers(0, 4))
            if k:
                xb, yb = np.rot90(xb, k, axes=(ya - 1, xa - 1)), np.rot90(yb, k, axes=(ya - 1, xa - 1))
        xb = np.ascontiguousarray(xb)
        img = xb[chans]  # the image channels of a sample (2.5D neighbours) change together
        if params.gamma > 1 and rng.random() < params.p:
            g = float(np.exp(rng.uniform(-np.log(params.gamma), np.log(params.gamma))))
            np.clip(img, 0.0, 1.0, out=img)
            img **= np.float32(g)
        if params.contrast > 0 and rng.random() < params.p:
            a = float(rng.uniform(1 - params.contrast, 1 + params.contrast))
            off = float(rng.uniform(-params.contrast / 2, params.contrast / 2))
            m = float(img.mean())
            img -= np.float32(m)
            img *= np.float32(a)
            img += np.float32(m + off)
        if params.blur > 0 and rng.random() < params.p:
            s = float(rng.uniform(0.0, params.blur))
            img = ndimage.gaussian_filter(img, sigma=[0.0] * (img.ndim - 2) + [s, s], mode="reflect")
        if params.noise > 0 and rng.random() < params.p:
            img += rng.normal(0.0, float(rng.uniform(0.0, params.noise)), img.shape).astype(np.float32)
        np.clip(img, 0.0, 1.0, out=img)
        xb[chans] = img
        x[b] = xb
        y[b] = np.ascontiguousarray(yb)
    return x, y
