"""porelab: FIB-SEM stacks of porous electrodes to 3D segmentation, porosity and pore sizes.

Import is side-effect free: no cluster starts, no configuration changes.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
