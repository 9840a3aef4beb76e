"""Writing meshes: PLY or STL through trimesh, atomically."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["MESH_FORMATS", "write_mesh"]

MESH_FORMATS = ("ply", "stl")


def write_mesh(mesh: Any, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a trimesh mesh (nm) as binary PLY or STL, chosen by the suffix; atomic.

    Raises
    ------
    ValueError
        If the suffix is not .ply or .stl, or the file exists and ``overwrite`` is False.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in MESH_FORMATS:
        raise ValueError(f"{path}: mesh format {path.suffix!r} is not one of .ply, .stl")
    if path.exists() and not overwrite:
        raise ValueError(f"{path}: already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        mesh.export(tmp, file_type=fmt)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
