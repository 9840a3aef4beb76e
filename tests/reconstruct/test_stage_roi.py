"""The reconstruct stage meshes a volume above max_voxels on a centred sub-volume, in the whole volume's frame."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pytest
import trimesh

from pipeline.errors import UserError
from pipeline.io.volume import as_volume, write_volume
from pipeline.jobs.context import StageContext
from pipeline.engine.blocks import centred_box
from pipeline.jobs.stages.reconstruct import Config, run


def test_the_centred_box_keeps_the_proportions_and_the_budget() -> None:
    assert centred_box((10, 20, 30), 10_000) is None  # fits: the whole volume
    assert centred_box((10, 20, 30), 0) is None  # no limit
    box = centred_box((238, 1299, 1024), 32_000_000)
    sides = [b - a for a, b in box]
    assert np.prod(sides) <= 32_000_000 and np.prod(sides) > 0.95 * 32_000_000
    assert all(abs((a + b) / 2 - n / 2) <= 1 for (a, b), n in zip(box, (238, 1299, 1024)))
    assert sides[1] > sides[2] > sides[0]  # the volume's proportions


def _ctx(tmp_path: Path, src: Path) -> StageContext:
    return StageContext(run_dir=tmp_path / "run", name="meshes", seed=0, backend="numpy", input=src, outputs={},
                        job_hash="job", stage_hash="h" * 16, chunks=(16, 16, 16))


def test_a_large_volume_is_meshed_on_its_centre_in_the_whole_frame(tmp_path: Path) -> None:
    labels = np.zeros((20, 24, 28), np.uint8)
    labels[2:18, 3:21, 4:24] = 1  # one box of pore, larger than any centred sub-volume below
    src = write_volume(as_volume(labels, (10.0, 5.0, 5.0), name="labels"), tmp_path / "labels.zarr", chunks=(16, 16, 16))
    with dask.config.set(scheduler="threads"):
        out = run(_ctx(tmp_path, src), Config(methods=["voxel_direct"], max_voxels=4000))
    roi = out.metrics["roi"]
    assert out.metrics["volume_shape"] == [20, 24, 28]
    sides = [b - a for a, b in roi]
    assert np.prod(sides) <= 4000
    mesh = trimesh.load(out.files["voxel_direct"])
    # the box cut by the sub-volume: the mesh spans it, where it is in the volume (voxel centres at index x size,
    # faces half a voxel off)
    lo = (np.array([roi[2][0], roi[1][0], roi[0][0]]) - 0.5) * np.array([5.0, 5.0, 10.0])
    hi = (np.array([roi[2][1], roi[1][1], roi[0][1]]) - 0.5) * np.array([5.0, 5.0, 10.0])
    assert np.allclose(mesh.bounds[0], lo, atol=1e-6) and np.allclose(mesh.bounds[1], hi, atol=1e-6)
    whole = run(_ctx(tmp_path / "w", src), Config(methods=["voxel_direct"], max_voxels=0))
    assert whole.metrics["roi"] is None
    with pytest.raises(UserError, match="not inside the volume"):
        run(_ctx(tmp_path / "bad", src), Config(methods=["voxel_direct"], roi=((0, 30), (0, 4), (0, 4))))
