"""Statistics of rendered samples that say how hard they are to segment."""

from __future__ import annotations

import numpy as np

__all__ = ["shine_through_share"]


def shine_through_share(image: np.ndarray, labels: np.ndarray) -> float:
    """Share of pore voxels brighter than their slice's Otsu threshold (0 for a stack without pores).

    In real FIB-SEM stacks the material seen through a pore is nearly as
    bright as the cut face, so a grey threshold takes much of the pore for
    solid; this is the share it would get wrong. ``image`` (z, y, x) grey
    values, ``labels`` 1 = pore, same shape.
    """
    from skimage.filters import threshold_otsu

    img = np.asarray(image)
    pore = np.asarray(labels) == 1
    bright = 0
    for z in range(img.shape[0]):
        sl = img[z]
        if sl.min() == sl.max():
            continue
        bright += int(np.count_nonzero(pore[z] & (sl > threshold_otsu(sl))))
    total = int(np.count_nonzero(pore))
    return bright / total if total else 0.0
